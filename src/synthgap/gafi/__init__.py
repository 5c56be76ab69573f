"""GaFi (Lampis et al., BMVC 2023): sampling, Dynamic Sample Filtering, Dynamic Dataset Recycle,
Expansion Trick, multiple generators, CAS and the search."""
