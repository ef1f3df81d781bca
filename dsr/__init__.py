"""dsr: a GDPR data-subject-rights request handler (Art. 15-21 GDPR, Art. 7(3) consent withdrawal).

Importing this package has no side effects: the app, the database engine and the queue are all
built by ``dsr.runtime.build`` / ``dsr.web.app.create_app`` from explicit settings.
"""

__version__ = "0.1.0"
