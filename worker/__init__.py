"""inmobi-audience-sync: Kafka segment-membership changes to InMobi DSP audiences."""

__version__ = "0.1.0"
