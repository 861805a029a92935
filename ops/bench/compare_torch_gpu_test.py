#!/usr/bin/env python3
"""compare_torch_gpu.py's parsing and ratios on a made-up bench report (no
GPU or torch needed)."""

import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import compare_torch_gpu as ctg  # noqa: E402


def bench_entry(name, real_time, unit="ns", gbps=0.0, error=False, **extra):
    entry = {"name": name, "run_type": "iteration", "real_time": real_time,
             "time_unit": unit, "GBps": gbps, **extra}
    if error:
        entry["error_occurred"] = True
    return entry


class CompareTorchGpuTest(unittest.TestCase):
    def setUp(self):
        self.report = {"benchmarks": [
            bench_entry("BM_CudaDecodeAttention/context:32768/div:1/batch:16/page:16/manual_time",
                        2000.0, "us", gbps=3000.0, ctas=528),
            bench_entry("BM_CudaDecodeAttention/context:32768/div:8/batch:16/page:32/manual_time",
                        250.0, "us", gbps=2800.0, ctas=528),
            bench_entry("BM_CudaDecodeAttention/context:8192/div:1/batch:1/page:16/manual_time",
                        1e9, "ns", error=True),
            bench_entry("BM_CudaEstimateTopK/context:32768/batch:16/page:32/fp16:1/manual_time",
                        50.0, "us", gbps=2000.0),
            bench_entry("BM_CudaEstimateTopK/context:32768/batch:16/page:16/fp16:0/manual_time",
                        300.0, "us", gbps=900.0),
            bench_entry("BM_CudaGather/manual_time", 5.0, "ms", gbps=1.0),
        ]}

    def test_parse_keeps_what_ran_in_seconds(self):
        parsed = ctg.parse_bench(self.report)
        self.assertEqual(sorted(parsed["attention"]), [(32768, 1, 16, 16), (32768, 8, 16, 32)])
        self.assertAlmostEqual(parsed["attention"][(32768, 1, 16, 16)]["s"], 2e-3)
        self.assertEqual(parsed["attention"][(32768, 8, 16, 32)]["ctas"], 528)
        self.assertEqual(sorted(parsed["estimate"]), [(32768, 16, 16, 0), (32768, 16, 32, 1)])
        self.assertAlmostEqual(parsed["estimate"][(32768, 16, 32, 1)]["s"], 5e-5)

    def test_ratios_against_torch_and_the_copy(self):
        parsed = ctg.parse_bench(self.report)
        # torch reads 8 GiB-ish of KV at batch 16, 32K in 3 ms.
        torch_results = {"sdpa": {(16, 32768): {"s": 3e-3}}, "d2d_GBps": 4000.0}
        rows = ctg.compare(parsed, torch_results, [32768], [16])
        self.assertEqual([r["what"] for r in rows], [
            "dense decode GB/s / torch SDPA GB/s",
            "torch SDPA (all) us / kvtier budgeted step (1/8) us",
            "estimate + top-k GB/s / device copy GB/s"])
        torch_gbps = ctg.kv_bytes(16, 32768) / 3e-3 / 1e9
        self.assertAlmostEqual(rows[0]["reference"], torch_gbps)
        self.assertAlmostEqual(rows[0]["ratio"], 3000.0 / torch_gbps)
        self.assertEqual(rows[0]["target"], 0.9)
        # The step is attention at 1/8 (250 us) plus estimate + top-k with
        # fp16 digests and pages of 32 (50 us), not the fp32 / 16 variant.
        self.assertAlmostEqual(rows[1]["kvtier"], 300.0)
        self.assertAlmostEqual(rows[1]["ratio"], 3e-3 / 300e-6)
        self.assertEqual(rows[1]["target"], 4.0)
        self.assertAlmostEqual(rows[2]["ratio"], 0.5)
        self.assertEqual(rows[2]["target"], 0.6)

    def test_batch_one_target_starts_at_32k(self):
        report = {"benchmarks": [
            bench_entry("BM_CudaDecodeAttention/context:%d/div:1/batch:1/page:16/manual_time" % c,
                        100.0, "us", gbps=500.0) for c in (8192, 32768)]}
        torch_results = {"sdpa": {(1, 8192): {"s": 5e-5}, (1, 32768): {"s": 1e-4}}}
        rows = ctg.compare(ctg.parse_bench(report), torch_results, [8192, 32768], [1])
        self.assertEqual([(r["context"], r["target"]) for r in rows], [(8192, None), (32768, 0.7)])

    def test_kv_bytes(self):
        self.assertEqual(ctg.kv_bytes(1, 8192), 2 * 8192 * 8 * 128 * 2)


if __name__ == "__main__":
    unittest.main()
