"""Writers for what a subject receives: CSV files, the ZIP package (later JSON and the PDF report)."""
