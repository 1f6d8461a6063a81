"""Search: batched scoring of NB201 cells, random search on NB201, evolution under a FLOPs budget."""
