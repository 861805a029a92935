#include "worker/eval/digest_study.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/status_macros.h"

namespace kvtier::eval {
namespace {

// Rankings by the exact attention mass, laid out as DigestPageRows'.
std::vector<float> ExactMassRows(const PageAttention& exact, Selection selection,
                                 uint32_t group) {
  const size_t n = exact.full_pages;
  if (selection == Selection::kShared) return {exact.mass.begin(), exact.mass.end()};
  const size_t heads = exact.head_mass.size() / std::max<size_t>(n, 1);
  const size_t per_row = selection == Selection::kPerQueryHead ? 1 : group;
  std::vector<float> rows(heads / per_row * n, 0.0f);
  for (size_t h = 0; h < heads; ++h) {
    for (size_t p = 0; p < n; ++p) rows[h / per_row * n + p] += exact.head_mass[h * n + p];
  }
  return rows;
}

}  // namespace

absl::StatusOr<DigestStudy> DigestStudy::Create(uint32_t n_q_heads, uint32_t n_kv_heads,
                                                uint32_t head_dim,
                                                DigestStudyOptions options) {
  for (uint32_t p : options.page_sizes) {
    const AttentionGeometry g{n_q_heads, n_kv_heads, head_dim, p};
    RETURN_IF_ERROR(g.Validate());
  }
  auto has_zero = [](const std::vector<uint32_t>& v) {
    for (uint32_t x : v) {
      if (x == 0) return true;
    }
    return false;
  };
  if (options.page_sizes.empty() || options.kinds.empty() || options.selections.empty() ||
      options.ks.size() + options.budget_fractions.size() == 0 || has_zero(options.ks) ||
      has_zero(options.budget_fractions)) {
    return absl::InvalidArgumentError(
        "digest study: page sizes, digests, selections and at least one k or budget fraction "
        "are required, all positive");
  }
  return DigestStudy(n_q_heads, n_kv_heads, head_dim, std::move(options));
}

DigestStudy::DigestStudy(uint32_t n_q_heads, uint32_t n_kv_heads, uint32_t head_dim,
                         DigestStudyOptions options)
    : n_q_heads_(n_q_heads),
      n_kv_heads_(n_kv_heads),
      head_dim_(head_dim),
      options_(std::move(options)),
      cells_(options_.page_sizes.size() * n_rankings() * options_.selections.size() * n_k()) {}

size_t DigestStudy::CellIndex(size_t page_size, size_t kind, size_t selection, size_t k) const {
  return ((page_size * n_rankings() + kind) * options_.selections.size() + selection) * n_k() + k;
}

absl::Status DigestStudy::Add(absl::Span<const float> keys, absl::Span<const float> q) {
  for (size_t pi = 0; pi < options_.page_sizes.size(); ++pi) {
    const AttentionGeometry g{n_q_heads_, n_kv_heads_, head_dim_, options_.page_sizes[pi]};
    ASSIGN_OR_RETURN(PageAttention exact, ExactPageAttention(g, keys, q));
    if (exact.full_pages == 0) continue;
    std::vector<uint32_t> ks = options_.ks;
    for (uint32_t f : options_.budget_fractions) ks.push_back((exact.full_pages + f - 1) / f);
    for (size_t ki = 0; ki < n_rankings(); ++ki) {
      for (size_t si = 0; si < options_.selections.size(); ++si) {
        std::vector<float> rows;
        if (ki < options_.kinds.size()) {
          ASSIGN_OR_RETURN(rows, DigestPageRows(g, options_.kinds[ki], keys, q,
                                                options_.selections[si]));
        } else {
          rows = ExactMassRows(exact, options_.selections[si], n_q_heads_ / n_kv_heads_);
        }
        ASSIGN_OR_RETURN(EstimatorQuality quality,
                         EvaluateSelection(g, exact, rows, options_.selections[si], ks));
        for (size_t j = 0; j < ks.size(); ++j) {
          if (quality.recall[j] < 0) continue;
          Cell& c = cells_[CellIndex(pi, ki, si, j)];
          c.recall += quality.recall[j];
          c.mass += quality.mass[j];
          c.samples += 1;
        }
      }
    }
  }
  return absl::OkStatus();
}

absl::Status DigestStudy::AddTrace(const TraceReader& trace,
                                   const std::function<void(uint32_t)>& on_layer) {
  const TraceHeader& h = trace.header();
  if (h.n_q_heads != n_q_heads_ || h.n_kv_heads != n_kv_heads_ || h.head_dim != head_dim_) {
    return absl::InvalidArgumentError(absl::StrCat(
        "trace heads ", h.n_q_heads, "/", h.n_kv_heads, " x ", h.head_dim,
        " differ from the study's ", n_q_heads_, "/", n_kv_heads_, " x ", head_dim_));
  }
  const size_t q_elems = size_t{h.n_q_heads} * h.head_dim;
  for (uint32_t l = 0; l < h.n_layers; ++l) {
    TracePromptLayer prompt;
    RETURN_IF_ERROR(trace.ReadPromptLayer(l, &prompt));
    std::vector<float> keys = std::move(prompt.keys);
    if (h.n_prompt_queries > 0) {
      // The last prompt query sees every prompt key.
      RETURN_IF_ERROR(Add(keys, absl::MakeConstSpan(prompt.queries)
                                    .subspan((h.n_prompt_queries - 1) * q_elems, q_elems)));
    }
    for (uint32_t s = 0; s < h.decode_steps; ++s) {
      TraceStep step;
      RETURN_IF_ERROR(trace.ReadStep(s, l, &step));
      keys.insert(keys.end(), step.key.begin(), step.key.end());
      RETURN_IF_ERROR(Add(keys, step.query));
    }
    if (on_layer) on_layer(l);
  }
  return absl::OkStatus();
}

std::string DigestStudy::Json() const {
  std::string json = "[";
  for (size_t pi = 0; pi < options_.page_sizes.size(); ++pi) {
    for (size_t ki = 0; ki < n_rankings(); ++ki) {
      const std::string digest =
          ki < options_.kinds.size() ? DigestKindName(options_.kinds[ki]) : "exact";
      for (size_t si = 0; si < options_.selections.size(); ++si) {
        for (size_t j = 0; j < n_k(); ++j) {
          const Cell& c = cells_[CellIndex(pi, ki, si, j)];
          const size_t nks = options_.ks.size();
          const std::string k = j < nks ? absl::StrCat(options_.ks[j])
                                        : absl::StrCat("1/", options_.budget_fractions[j - nks]);
          const double n = c.samples > 0 ? c.samples : 1.0;
          absl::StrAppendFormat(
              &json,
              "%s\n    {\"page_size\": %u, \"digest\": \"%s\", \"selection\": \"%s\", "
              "\"k\": \"%s\", \"recall\": %.4f, \"mass\": %.4f, \"samples\": %.0f}",
              json.size() > 1 ? "," : "", options_.page_sizes[pi], digest,
              SelectionName(options_.selections[si]), k,
              c.recall / n, c.mass / n, c.samples);
        }
      }
    }
  }
  return json + "\n  ]";
}

}  // namespace kvtier::eval
