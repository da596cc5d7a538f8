"""The CUDA path (skipped without a GPU): same answers as the CPU, faithful bf16 maps, real micro-batches."""
import asyncio

import numpy as np
import pytest
import torch

from attnlens.analysis.engine import Engine
from attnlens.analysis.imaging import decode_image
from attnlens.models.loading import load_model
from attnlens.server.service import Service
from attnlens.server.settings import Settings

pytestmark = pytest.mark.cuda


def test_cuda_matches_cpu_and_bf16_stays_faithful(default_model, photos):
    cuda = load_model(device="cuda")
    image = decode_image(photos["cat"])
    batch, _ = Engine(default_model).prepare(image)
    cpu_run = Engine(default_model).run(batch)
    for precision in ("fp32", "bf16"):
        gpu_run = Engine(cuda, precision).run(batch)
        assert gpu_run.predictions.argmax().item() == cpu_run.predictions.argmax().item()
        for name, record in cpu_run.maps.items():
            a, b = record.heatmap.float().flatten(), gpu_run.maps[name].heatmap.float().cpu().flatten()
            if a.std() > 0:
                assert np.corrcoef(a.numpy(), b.numpy())[0, 1] > (0.999 if precision == "fp32" else 0.98), name


def test_concurrent_requests_are_batched_on_the_gpu(photos):
    service = Service(Settings(model="efficientnet_lite0", device="cuda", batch_window_ms=50))
    service.start(background=False)
    try:
        from attnlens.analysis.options import AnalyzeOptions

        served = service.get(None)
        tensor, geometry = service.prepare(served, photos["cat"], AnalyzeOptions())

        async def many():
            return await asyncio.gather(*(served.batcher.submit(tuple(tensor.shape),
                                                                (tensor, AnalyzeOptions(), geometry, 0.0), 60)
                                          for _ in range(8)))

        analyses = asyncio.run(many())
        assert len(analyses) == 8 and max(served.batcher.batch_sizes) > 1
        assert torch.cuda.is_available()
    finally:
        service.stop()
