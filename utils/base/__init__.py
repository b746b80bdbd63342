"""Foundation layer: errors, atomic writes, locks and the shared defaults. Imports nothing else of the project."""
