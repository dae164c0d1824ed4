"""Training loops for the lifter and the refiner."""
