"""Independent float64 reference for kvtier-run's GGUF Llama path.

Recomputes the next-token logits of a prompt the way Hugging Face's Llama
does it: GGUF's Q/K rows are un-permuted (the inverse of convert_hf_to_gguf's
`permute`) and RoPE rotates halves (rotate_half), the NeoX-style pairing.
kvtier-run keeps the permuted rows and rotates adjacent pairs (llama.cpp's
rope type NORM); the two must agree. Tensors are dequantized by PyPI `gguf`,
independently of worker/model/ggml_types.cc. Shapes are SmolLM2-135M's.

  kvtier-run --model M.gguf --policy dense --prompt TEXT --steps N \
      --logits-out /tmp/logits.bin
  python hf_reference.py M.gguf /tmp/logits.bin   # needs numpy and gguf
"""
import struct, sys
import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize

path, dump = sys.argv[1], sys.argv[2]
r = GGUFReader(path)
tensors = {t.name: t for t in r.tensors}
def T(name):
    t = tensors[name]
    a = np.asarray(dequantize(t.data, t.tensor_type), dtype=np.float64)
    shape = [int(x) for x in t.shape]
    return a.reshape(list(reversed(shape)))
raw = open(dump, 'rb').read()
n = struct.unpack_from('<i', raw, 0)[0]
toks = list(struct.unpack_from('<%di' % n, raw, 4))
vocab = struct.unpack_from('<i', raw, 4 + 4 * n)[0]
mine = np.frombuffer(raw, dtype='<f4', count=vocab, offset=8 + 4 * n)
dim, H, KV, hd, L, theta, eps = 576, 9, 3, 64, 30, 100000.0, 1e-5
def unpermute(w, nh):
    return w.reshape(nh, hd // 2, 2, -1).swapaxes(1, 2).reshape(w.shape)
def rms(x, w):
    return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * w
inv = 1.0 / theta ** (np.arange(0, hd, 2) / hd)
pos = np.arange(n)[:, None] * inv[None, :]
emb = np.concatenate([pos, pos], -1)
cos, sin = np.cos(emb), np.sin(emb)
def rope(x):  # x [n, heads, hd]
    x1, x2 = x[..., :hd // 2], x[..., hd // 2:]
    rot = np.concatenate([-x2, x1], -1)
    return x * cos[:, None, :] + rot * sin[:, None, :]
E = T('token_embd.weight')
x = E[toks]
mask = np.triu(np.full((n, n), -np.inf), 1)
for l in range(L):
    p = 'blk.%d.' % l
    h = rms(x, T(p + 'attn_norm.weight'))
    q = (h @ unpermute(T(p + 'attn_q.weight'), H).T).reshape(n, H, hd)
    k = (h @ unpermute(T(p + 'attn_k.weight'), KV).T).reshape(n, KV, hd)
    v = (h @ T(p + 'attn_v.weight').T).reshape(n, KV, hd)
    q, k = rope(q), rope(k)
    out = np.zeros((n, H, hd))
    for hh in range(H):
        kvh = hh // (H // KV)
        s = q[:, hh] @ k[:, kvh].T / np.sqrt(hd) + mask
        s = np.exp(s - s.max(-1, keepdims=True)); s /= s.sum(-1, keepdims=True)
        out[:, hh] = s @ v[:, kvh]
    x = x + out.reshape(n, -1) @ T(p + 'attn_output.weight').T
    h = rms(x, T(p + 'ffn_norm.weight'))
    g = h @ T(p + 'ffn_gate.weight').T
    u = h @ T(p + 'ffn_up.weight').T
    x = x + ((g / (1 + np.exp(-g))) * u) @ T(p + 'ffn_down.weight').T
ref = rms(x[-1], T('output_norm.weight')) @ E.T
d = np.abs(ref - mine)
print('tokens', n, 'vocab', vocab)
print('max_abs_diff %.3g  rms_diff %.3g  logit_scale(std) %.3g' % (d.max(), np.sqrt((d*d).mean()), ref.std()))
print('argmax ref', int(ref.argmax()), 'mine', int(mine.argmax()))
print('top5 ref', list(np.argsort(-ref)[:5]), 'mine', list(np.argsort(-mine)[:5]))
