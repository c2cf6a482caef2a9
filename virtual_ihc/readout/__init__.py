"""Reading a virtual Ki-67 slide: every nucleus called positive or negative, the labelling index, QuPath cells."""
