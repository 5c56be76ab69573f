"""Equivalence (closed-set generative vs real data augmentation): the fitter and its figures."""
