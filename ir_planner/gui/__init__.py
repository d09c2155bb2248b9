"""PyQt5 windows over pyvistaqt; no computation here."""
