"""Web layer: the app factory and one blueprint per audience (api; portal and console follow)."""
