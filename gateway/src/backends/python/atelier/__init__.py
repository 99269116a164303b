"""Atelier's helpers inside notebooks. `atelier.file`: object storage (like MoXing's mox.file);
`atelier.workflow`: workflows (the seed's workflow SDK)."""
