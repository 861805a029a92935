"""What the kvtier-eval report scripts share: their command line, the text
table they print and the PNG they may save."""
import argparse
import json


def load_report(doc, png_help=None):
    """Parses `SCRIPT REPORT.json [--png OUT.png]` (`doc`: the script's
    docstring) and returns the report and the PNG path, or None."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("report")
    ap.add_argument("--png", help=png_help)
    args = ap.parse_args()
    with open(args.report) as f:
        return json.load(f), args.png


def pyplot():
    """matplotlib.pyplot drawing off screen."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def save_figure(fig, path):
    """Lays `fig` out tight, writes it to `path` and says so."""
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"wrote {path}")


def table(rows, cols):
    """Columns padded to their widest cell, a rule under the header."""
    widths = [max(len(c), *(len(r[i]) for r in rows)) if rows else len(c)
              for i, c in enumerate(cols)]
    out = ["  ".join(c.ljust(w) for c, w in zip(cols, widths)),
           "  ".join("-" * w for w in widths)]
    out += ["  ".join(v.ljust(w) for v, w in zip(r, widths)) for r in rows]
    return "\n".join(out)
