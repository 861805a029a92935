#!/usr/bin/env python3
"""Prints kvtier-eval digests' JSON as tables: for each context, one row per
(page size, digest, selection) with recall@k and mass@k at every k.

    digest_report.py REPORT.json
"""
from report_table import load_report, table


def main():
    rep, _ = load_report(__doc__, png_help="not drawn: the digest study prints tables only")
    m = rep["model"]
    print(f"model: {m['layers']} layers, {m['q_heads']}/{m['kv_heads']} heads x {m['head_dim']}")
    for ctx in rep["contexts"]:
        ks = list(dict.fromkeys(r["k"] for r in ctx["rows"]))
        groups = {}
        samples = {}
        for r in ctx["rows"]:
            key = (r["page_size"], r["digest"], r["selection"])
            groups.setdefault(key, {})[r["k"]] = r
            samples[r["page_size"]] = max(samples.get(r["page_size"], 0), r["samples"])
        rows = []
        for (p, d, s), by_k in groups.items():
            rows.append([str(p), d, s] + [f"{by_k[k]['recall']:.3f}" for k in ks] +
                        [f"{by_k[k]['mass']:.3f}" for k in ks])
        print(f"\ncontext {ctx['context']}: {ctx['cases']} cases, "
              f"{ctx['mean_prompt_tokens']:.0f} prompt tokens on average, queries per page size: " +
              ", ".join(f"{p}: {n:.0f}" for p, n in sorted(samples.items())))
        print(table(rows, ["page", "digest", "selection"] + [f"recall@{k}" for k in ks] +
                    [f"mass@{k}" for k in ks]))


if __name__ == "__main__":
    main()
