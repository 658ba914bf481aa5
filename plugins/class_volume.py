"""Class-volume weights (DV, PV, BV): written next."""
