"""PyVista scene built from core objects."""
