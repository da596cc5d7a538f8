"""Analysis: image bytes -> upright image -> tensor -> forward pass under capture -> report -> PNG / figure."""
