"""dpaudit: privacy auditing and attack evaluation for fine-tuned language models."""

__version__ = "0.1.0"
