#include "worker/policy/arkv_policy.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "kernels/quantize.h"
#include "worker/policy/token_attention.h"

namespace kvtier::worker {

absl::Status ArkvOptions::Validate() const {
  if (window == 0) return absl::InvalidArgumentError("arkv window must be positive");
  if (!(tau1 > 0 && tau2 > 0 && tau3 > 0)) {
    return absl::InvalidArgumentError("arkv tau exponents must be positive");
  }
  if (!(gamma >= 0)) return absl::InvalidArgumentError("arkv gamma must be >= 0");
  if (!(keep_fraction > 0 && keep_fraction <= 1)) {
    return absl::InvalidArgumentError("arkv keep_fraction must be in (0, 1]");
  }
  if (pool_kernel == 0 || pool_kernel % 2 == 0) {
    return absl::InvalidArgumentError("arkv pool_kernel must be odd");
  }
  if (quant_type != kernels::ScalarType::kFp8E4M3 && quant_type != kernels::ScalarType::kInt8) {
    return absl::InvalidArgumentError("arkv quant_type must be fp8 e4m3 or int8");
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<ArkvPolicy>> ArkvPolicy::Create(ArkvOptions options) {
  RETURN_IF_ERROR(options.Validate());
  return std::unique_ptr<ArkvPolicy>(new ArkvPolicy(options));
}

std::vector<float> AvgPool1d(const std::vector<float>& in, uint32_t kernel) {
  const int64_t n = static_cast<int64_t>(in.size());
  const int64_t half = kernel / 2;
  std::vector<float> out(in.size(), 0.0f);
  for (int64_t j = 0; j < n; ++j) {
    float sum = 0.0f;
    for (int64_t t = j - half; t <= j + half; ++t) {
      if (t >= 0 && t < n) sum += in[t];
    }
    out[j] = sum / static_cast<float>(kernel);
  }
  return out;
}

namespace {

// Indices of `score` ordered best first; ties go to the later position.
std::vector<uint32_t> RankDescending(const std::vector<float>& score,
                                     const std::vector<uint32_t>& position) {
  std::vector<uint32_t> order(score.size());
  std::iota(order.begin(), order.end(), 0u);
  std::sort(order.begin(), order.end(), [&](uint32_t a, uint32_t b) {
    if (score[a] != score[b]) return score[a] > score[b];
    return position[a] > position[b];
  });
  return order;
}

// Statistics of the last w prompt queries' attention (causal inside the
// window) restricted to the n - w non-window keys.
struct WindowStats {
  double entropy = 0;   // sum of -p log p over heads, window rows, keys
  double variance = 0;  // sum over heads and keys of var along the rows
  double kurtosis = 0;  // sum over heads and keys of m4 / m2^2 along the rows
  // Per list and key ([n_lists][n - w]): sum over the list's heads (every
  // query head, or a KV head's group) of mean + gamma var along the last
  // score_rows rows (var is 0 for one row).
  std::vector<float> heavy_hitter;
};

WindowStats WindowAttentionStats(const float* k, uint32_t n, const float* queries,
                                 uint32_t n_queries, uint32_t w, uint32_t hq, uint32_t hkv,
                                 uint32_t d, double gamma, uint32_t score_rows,
                                 bool per_kv_head) {
  const uint32_t group = hq / hkv;
  const float scale = 1.0f / std::sqrt(static_cast<float>(d));
  const uint32_t nw = n - w;
  WindowStats st;
  st.heavy_hitter.assign(size_t{per_kv_head ? hkv : 1u} * nw, 0.0f);
  std::vector<float> p(size_t{w} * nw);  // one head's window rows over non-window keys
  std::vector<float> logits(n);
  // Moments of key j's attention along window rows [first, w): the
  // mean, torch.var's unbiased variance, and the population m2 and m4.
  struct Moments {
    double mean = 0, var = 0, m2 = 0, m4 = 0;
  };
  auto moments = [&](uint32_t j, uint32_t first) {
    const uint32_t rows = w - first;
    Moments r;
    for (uint32_t i = first; i < w; ++i) r.mean += p[size_t{i} * nw + j];
    r.mean /= rows;
    for (uint32_t i = first; i < w; ++i) {
      const double dev = p[size_t{i} * nw + j] - r.mean;
      r.m2 += dev * dev;
      r.m4 += dev * dev * dev * dev;
    }
    r.var = rows > 1 ? r.m2 / (rows - 1) : 0.0;
    r.m2 /= rows;
    r.m4 /= rows;
    return r;
  };
  for (uint32_t h = 0; h < hq; ++h) {
    for (uint32_t i = 0; i < w; ++i) {
      const float* qi = queries + (size_t{n_queries - w + i} * hq + h) * d;
      const uint32_t visible = nw + i + 1;
      float max_logit = -INFINITY;
      for (uint32_t j = 0; j < visible; ++j) {
        const float* kj = k + (size_t{j} * hkv + h / group) * d;
        float dot = 0;
        for (uint32_t c = 0; c < d; ++c) dot += qi[c] * kj[c];
        logits[j] = scale * dot;
        max_logit = std::max(max_logit, logits[j]);
      }
      double sum = 0;
      for (uint32_t j = 0; j < visible; ++j) sum += std::exp(logits[j] - max_logit);
      for (uint32_t j = 0; j < nw; ++j) {
        const float pij = static_cast<float>(std::exp(logits[j] - max_logit) / sum);
        p[size_t{i} * nw + j] = pij;
        if (pij > 0) st.entropy -= pij * std::log(pij);
      }
    }
    float* heavy = st.heavy_hitter.data() + (per_kv_head ? size_t{h / group} * nw : 0);
    for (uint32_t j = 0; j < nw; ++j) {
      const Moments all = moments(j, 0);
      st.variance += all.var;
      st.kurtosis += all.m2 > 0 ? all.m4 / (all.m2 * all.m2) : 0.0;
      const Moments score = score_rows >= w ? all : moments(j, w - score_rows);
      heavy[j] += static_cast<float>(score.mean + gamma * score.var);
    }
  }
  return st;
}

}  // namespace

absl::Status ArkvPolicy::RunPrefill(const TokenContext& ctx, const float* k, const float* v,
                                    uint32_t n, const float* queries, uint32_t n_queries) {
  const PageLayout& lay = ctx.cache->layout();
  ASSIGN_OR_RETURN(LayerView view, ctx.cache->View(ctx.seq_id, ctx.layer));
  const uint32_t cache_size = CacheSize(view, lay);
  if (cache_size <= options_.window) {
    return absl::InvalidArgumentError(absl::StrCat("arkv: cache of ", cache_size,
                                                   " tokens leaves nothing beyond the window"));
  }
  const uint32_t w = std::min({options_.window, n_queries, n});
  const uint32_t nw = n - w;  // non-window keys
  const uint32_t score_rows = options_.score_rows == 0 ? w : std::min(options_.score_rows, w);
  const uint32_t n_lists = ListCount(lay);
  const WindowStats st =
      WindowAttentionStats(k, n, queries, n_queries, w, ctx.cache->n_q_heads(), lay.n_kv_heads,
                           lay.head_dim, options_.gamma, score_rows, options_.per_kv_head);
  Layer& state = layers_[{ctx.seq_id, ctx.layer}];
  state = Layer();
  state.oq = std::pow(st.entropy, 1.0 / options_.tau1) *
             std::pow(st.variance, 1.0 / options_.tau2) *
             std::pow(st.kurtosis, 1.0 / options_.tau3);
  state.origin_pos.assign(n_lists, {});
  state.quant_pos.assign(n_lists, {});
  // Of the ranked non-window keys of a prompt longer than the cache, the
  // first n_fp stay in full precision and the next n_quant are quantized.
  // The authors' (a quantized token counting 1): the top cache_size - W in
  // full precision, none quantized. At cost, the overflow rule's split
  // (RunAfterAttention) filling the cache: the layer's origin_budget - W
  // in full precision (rho from the layers prefilled so far, as the
  // authors recompute it as each layer finishes), then quantized tokens
  // while both tiers' cost stays within cache_size.
  uint32_t n_fp = n <= cache_size ? nw : cache_size - w;
  uint32_t n_quant = 0;
  if (n > cache_size && options_.count_quantized_at_cost) {
    const int64_t origin_budget = OriginBudget(ctx.seq_id, ctx.layer, cache_size);
    n_fp = static_cast<uint32_t>(std::clamp<int64_t>(origin_budget - options_.window, 0,
                                                     std::min(nw, cache_size - w)));
    n_quant = static_cast<uint32_t>(std::min<double>(
        nw - n_fp, std::floor((cache_size - w - n_fp) / QuantizedCost(lay))));
  }
  std::vector<uint32_t> kept, quantized;  // [n_lists][kept per list], the same for quantized
  for (uint32_t l = 0; l < n_lists; ++l) {
    std::vector<uint32_t>& list = state.origin_pos[l];
    if (n <= cache_size) {
      list.resize(n);
      std::iota(list.begin(), list.end(), 0u);
    } else {
      std::vector<uint32_t> positions(nw);
      std::iota(positions.begin(), positions.end(), 0u);
      const std::vector<float> heavy(st.heavy_hitter.begin() + size_t{l} * nw,
                                     st.heavy_hitter.begin() + size_t{l + 1} * nw);
      list = RankDescending(AvgPool1d(heavy, options_.pool_kernel), positions);
      state.quant_pos[l].assign(list.begin() + n_fp, list.begin() + n_fp + n_quant);
      std::sort(state.quant_pos[l].begin(), state.quant_pos[l].end());
      list.resize(n_fp);
      for (uint32_t j = nw; j < n; ++j) list.push_back(j);
      std::sort(list.begin(), list.end());
    }
    kept.insert(kept.end(), list.begin(), list.end());
    quantized.insert(quantized.end(), state.quant_pos[l].begin(), state.quant_pos[l].end());
  }
  RETURN_IF_ERROR(
      StoreQuantized(*ctx.cache, state, GatherKvRows(k, v, quantized, n_lists, lay)));
  const KvRows rows = GatherKvRows(k, v, kept, n_lists, lay);
  return ctx.cache->AppendKv(ctx.seq_id, ctx.layer, rows.k.data(), rows.v.data(), rows.count);
}

uint32_t ArkvPolicy::CacheSize(const LayerView& view, const PageLayout& lay) const {
  const uint32_t slots = view.budget_pages * view.page_size;
  if (!options_.count_quantized_at_cost) return slots - 1;
  // Both tiers are held in whole pages, and a slot stays free for the next
  // token: ceil((full + 1) / P) + c * ceil(quantized / P) <= budget pages
  // whenever full + c * quantized <= slots - P - c * (P - 1).
  const double fit = slots - view.page_size - QuantizedCost(lay) * (view.page_size - 1);
  return fit > 0 ? static_cast<uint32_t>(fit) : 0;
}

double ArkvPolicy::QuantizedCost(const PageLayout& lay) const {
  if (!options_.count_quantized_at_cost) return 1.0;
  return static_cast<double>(kernels::QuantizedPageBytes(lay.page_size, lay.n_kv_heads,
                                                         lay.head_dim, options_.quant_type)) /
         static_cast<double>(lay.PageBytes());
}

uint32_t ArkvPolicy::OriginBudget(uint64_t seq_id, uint32_t layer, uint32_t cache_size) const {
  double max_oq = 0;
  for (const auto& [key, state] : layers_) {
    if (key.first == seq_id) max_oq = std::max(max_oq, state.oq);
  }
  const double rho = max_oq > 0 ? layers_.at({seq_id, layer}).oq / max_oq : 1.0;
  return static_cast<uint32_t>(std::lround(rho * (cache_size - options_.window)));
}

absl::Status ArkvPolicy::RunAfterAttention(const TokenContext& ctx, const float* q,
                                           const float* lse) {
  auto it = layers_.find(Key{ctx.seq_id, ctx.layer});
  if (it == layers_.end()) return absl::FailedPreconditionError("arkv: layer was not prefilled");
  Layer& state = it->second;
  ASSIGN_OR_RETURN(LayerView view, ctx.cache->View(ctx.seq_id, ctx.layer));
  ASSIGN_OR_RETURN(uint32_t n_ids, ctx.cache->TokenIdCount(ctx.seq_id));
  for (std::vector<uint32_t>& list : state.origin_pos) {
    list.push_back(n_ids - 1);  // this step's token
    if (list.size() != view.n_tokens) {
      return absl::InternalError(absl::StrCat("arkv: ", view.n_tokens,
                                              " cached tokens but the policy tracks ",
                                              list.size()));
    }
  }
  const PageLayout& lay = ctx.cache->layout();
  const uint32_t cache_size = CacheSize(view, lay);
  const double held = static_cast<double>(view.n_tokens) +
                      QuantizedCost(lay) * state.quant_pos.front().size();
  if (held <= cache_size) return absl::OkStatus();
  return Rebuild(ctx, state, q, lse);
}

absl::Status ArkvPolicy::Rebuild(const TokenContext& ctx, Layer& state, const float* q,
                                 const float* lse) {
  TokenCache& cache = *ctx.cache;
  const PageLayout& lay = cache.layout();
  const size_t row = size_t{lay.n_kv_heads} * lay.head_dim;
  const uint32_t n_lists = static_cast<uint32_t>(state.origin_pos.size());
  // Both tiers as fp32 rows: full precision first, then the dequantized tier
  // (row r of list l is the token at pos[l][r]).
  std::vector<float> k, v;
  RETURN_IF_ERROR(cache.ReadTokens(ctx.seq_id, ctx.layer, &k, &v));
  const uint32_t n_fp_held = static_cast<uint32_t>(state.origin_pos.front().size());
  const uint32_t n_quant_held = static_cast<uint32_t>(state.quant_pos.front().size());
  const auto type = static_cast<kernels::ScalarType>(lay.dtype);
  const size_t fbytes = lay.PageBytes();
  for (size_t j = 0; j < n_quant_held; ++j) {
    const uint8_t* page = state.dequant.data() + (j / lay.page_size) * fbytes;
    const size_t base = (j % lay.page_size) * row;
    for (size_t e = 0; e < row; ++e) {
      k.push_back(kernels::LoadAsFloat(page, type, base + e));
      v.push_back(kernels::LoadAsFloat(page, type, lay.ElementsPerTensor() + base + e));
    }
  }
  const uint32_t total = n_fp_held + n_quant_held;
  std::vector<float> mass;  // [n_lists][total]
  RowTokenMass(k.data(), total, lay.n_kv_heads, cache.n_q_heads(), lay.head_dim, q, lse,
               n_lists > 1, &mass);
  ASSIGN_OR_RETURN(LayerView view, cache.View(ctx.seq_id, ctx.layer));
  const uint32_t cache_size = CacheSize(view, lay);
  const int64_t origin_budget = OriginBudget(ctx.seq_id, ctx.layer, cache_size);
  const double c = QuantizedCost(lay);
  const uint32_t w = std::min(options_.window, total);
  const uint32_t past = total - w;

  std::vector<std::vector<uint32_t>> pos(n_lists), fp_rows(n_lists), quant_rows(n_lists);
  for (uint32_t l = 0; l < n_lists; ++l) {
    pos[l] = state.origin_pos[l];
    pos[l].insert(pos[l].end(), state.quant_pos[l].begin(), state.quant_pos[l].end());
    std::vector<uint32_t> by_pos(total);
    std::iota(by_pos.begin(), by_pos.end(), 0u);
    std::sort(by_pos.begin(), by_pos.end(),
              [&](uint32_t a, uint32_t b) { return pos[l][a] < pos[l][b]; });
    std::vector<float> hh(past);
    std::vector<uint32_t> hh_pos(past);
    for (uint32_t i = 0; i < past; ++i) {
      hh[i] = mass[size_t{l} * total + by_pos[i]];
      hh_pos[i] = pos[l][by_pos[i]];
    }
    const std::vector<uint32_t> order =
        RankDescending(AvgPool1d(hh, options_.pool_kernel), hh_pos);
    // The survivors may cost keep_fraction of what the past costs now: the
    // best n_fp in full precision at 1 each, the next quantized at c each
    // (c = 1: keep = floor(keep_fraction * past) tokens, as the authors).
    // Every list holds the window in full precision, so the counts below
    // are the same in every list.
    uint32_t past_fp = 0;
    for (uint32_t i = 0; i < past; ++i) past_fp += by_pos[i] < n_fp_held ? 1 : 0;
    const double keep_cost = options_.keep_fraction * (past_fp + c * (past - past_fp));
    const uint32_t n_fp = static_cast<uint32_t>(
        std::clamp<int64_t>(origin_budget - options_.window, 0,
                            std::min<int64_t>(past, static_cast<int64_t>(keep_cost))));
    const uint32_t keep = static_cast<uint32_t>(
        std::min<double>(past, n_fp + std::floor((keep_cost - n_fp) / c)));
    for (uint32_t r = 0; r < keep; ++r) {
      (r < n_fp ? fp_rows[l] : quant_rows[l]).push_back(by_pos[order[r]]);
    }
    for (uint32_t i = past; i < total; ++i) fp_rows[l].push_back(by_pos[i]);
    auto by_position = [&](uint32_t a, uint32_t b) { return pos[l][a] < pos[l][b]; };
    std::sort(fp_rows[l].begin(), fp_rows[l].end(), by_position);
    std::sort(quant_rows[l].begin(), quant_rows[l].end(), by_position);
    if (fp_rows[l].size() != fp_rows[0].size() || quant_rows[l].size() != quant_rows[0].size()) {
      return absl::InternalError(absl::StrCat("arkv: KV head ", l, " keeps ", fp_rows[l].size(),
                                              " + ", quant_rows[l].size(), " tokens, head 0 ",
                                              fp_rows[0].size(), " + ", quant_rows[0].size()));
    }
  }
  auto flat = [](const std::vector<std::vector<uint32_t>>& lists) {
    std::vector<uint32_t> out;
    for (const std::vector<uint32_t>& list : lists) out.insert(out.end(), list.begin(), list.end());
    return out;
  };
  const std::vector<uint32_t> fp_flat = flat(fp_rows);
  const std::vector<uint32_t> quant_flat = flat(quant_rows);

  // Rewrite the full-precision tier in the pool.
  std::vector<uint32_t> all_slots(view.n_tokens);
  std::iota(all_slots.rbegin(), all_slots.rend(), 0u);
  RETURN_IF_ERROR(cache.EvictTokens(ctx.seq_id, ctx.layer, all_slots));
  const KvRows fp = GatherKvRows(k.data(), v.data(), fp_flat, n_lists, lay);
  RETURN_IF_ERROR(cache.AppendKv(ctx.seq_id, ctx.layer, fp.k.data(), fp.v.data(), fp.count));
  RETURN_IF_ERROR(
      StoreQuantized(cache, state, GatherKvRows(k.data(), v.data(), quant_flat, n_lists, lay)));
  for (uint32_t l = 0; l < n_lists; ++l) {
    state.origin_pos[l].clear();
    for (uint32_t r : fp_rows[l]) state.origin_pos[l].push_back(pos[l][r]);
    state.quant_pos[l].clear();
    for (uint32_t r : quant_rows[l]) state.quant_pos[l].push_back(pos[l][r]);
  }
  return absl::OkStatus();
}

absl::Status ArkvPolicy::StoreQuantized(const TokenCache& cache, Layer& state,
                                        const KvRows& rows) {
  const PageLayout& lay = cache.layout();
  const auto float_type = static_cast<kernels::ScalarType>(lay.dtype);
  const size_t row = size_t{lay.n_kv_heads} * lay.head_dim;
  const size_t n_rows = rows.count;
  const uint32_t p = lay.page_size;
  const uint32_t n_pages = static_cast<uint32_t>((n_rows + p - 1) / p);
  const size_t fbytes = kernels::FloatPageBytes(p, lay.n_kv_heads, lay.head_dim, float_type);
  const size_t qbytes =
      kernels::QuantizedPageBytes(p, lay.n_kv_heads, lay.head_dim, options_.quant_type);
  std::vector<uint8_t> staging(n_pages * fbytes, 0);
  for (size_t i = 0; i < n_rows; ++i) {
    uint8_t* page = staging.data() + (i / p) * fbytes;
    const size_t base = (i % p) * row;
    for (size_t e = 0; e < row; ++e) {
      kernels::StoreFromFloat(page, float_type, base + e, rows.k[i * row + e]);
      kernels::StoreFromFloat(page, float_type, lay.ElementsPerTensor() + base + e,
                              rows.v[i * row + e]);
    }
  }
  state.quant.assign(n_pages * qbytes, 0);
  state.dequant.assign(n_pages * fbytes, 0);
  state.quant_pages = n_pages;
  state.page_size = p;
  if (n_pages == 0) return absl::OkStatus();
  kernels::PageQuantArgs args;
  args.page_size = p;
  args.n_kv_heads = lay.n_kv_heads;
  args.head_dim = lay.head_dim;
  args.float_type = float_type;
  args.quant_type = options_.quant_type;
  args.n_pages = n_pages;
  args.src = staging.data();
  args.src_stride_bytes = fbytes;
  args.dst = state.quant.data();
  args.dst_stride_bytes = qbytes;
  RETURN_IF_ERROR(kernels::QuantizePagesCpu(args, nullptr));
  // Attention reads exactly what a dequantization of the stored tier gives.
  args.src = state.quant.data();
  args.src_stride_bytes = qbytes;
  args.dst = state.dequant.data();
  args.dst_stride_bytes = fbytes;
  return kernels::DequantizePagesCpu(args, nullptr);
}

AuxKv ArkvPolicy::Auxiliary(uint64_t seq_id, uint32_t layer) const {
  auto it = layers_.find(Key{seq_id, layer});
  if (it == layers_.end() || it->second.quant_pos.empty() ||
      it->second.quant_pos.front().empty()) {
    return AuxKv();
  }
  const Layer& state = it->second;
  AuxKv aux;
  aux.pool = state.dequant.data();
  aux.page_stride_bytes = state.dequant.size() / state.quant_pages;
  aux.n_pages = state.quant_pages;
  aux.last_page_len = static_cast<int32_t>(state.quant_pos.front().size() -
                                           size_t{state.quant_pages - 1} * state.page_size);
  return aux;
}

uint64_t ArkvPolicy::own_layer_kv_bytes(uint32_t layer) const {
  uint64_t held = 0;
  for (const auto& [key, state] : layers_) {
    if (key.second == layer) held += state.quant.size();
  }
  return held;
}

void ArkvPolicy::EndSequence(uint64_t seq_id) {
  absl::erase_if(layers_, [seq_id](const auto& entry) { return entry.first.first == seq_id; });
}

double ArkvPolicy::OqScore(uint64_t seq_id, uint32_t layer) const {
  auto it = layers_.find(Key{seq_id, layer});
  return it == layers_.end() ? 0.0 : it->second.oq;
}

uint32_t ArkvPolicy::QuantizedTokens(uint64_t seq_id, uint32_t layer) const {
  auto it = layers_.find(Key{seq_id, layer});
  if (it == layers_.end() || it->second.quant_pos.empty()) return 0;
  return static_cast<uint32_t>(it->second.quant_pos.front().size());
}

size_t ArkvPolicy::QuantizedBytes(uint64_t seq_id, uint32_t layer) const {
  auto it = layers_.find(Key{seq_id, layer});
  return it == layers_.end() ? 0 : it->second.quant.size();
}

std::vector<uint32_t> ArkvPolicy::FullPrecisionPositions(uint64_t seq_id, uint32_t layer,
                                                         uint32_t kv_head) const {
  auto it = layers_.find(Key{seq_id, layer});
  if (it == layers_.end() || it->second.origin_pos.empty()) return {};
  const auto& lists = it->second.origin_pos;
  return lists[std::min<size_t>(kv_head, lists.size() - 1)];
}

std::vector<uint32_t> ArkvPolicy::QuantizedPositions(uint64_t seq_id, uint32_t layer,
                                                     uint32_t kv_head) const {
  auto it = layers_.find(Key{seq_id, layer});
  if (it == layers_.end() || it->second.quant_pos.empty()) return {};
  const auto& lists = it->second.quant_pos;
  return lists[std::min<size_t>(kv_head, lists.size() - 1)];
}

}  // namespace kvtier::worker
