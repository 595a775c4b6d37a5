"""blast-ray: the BLAST multimodal recommender as a distributed batch system on Ray and Spark."""

__version__ = "0.1.0"
