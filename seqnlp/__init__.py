"""seqnlp: sequence NLP with recurrent networks on Hugging Face data."""

__version__ = "0.1.0"
