// WorkerAttentionBackend's prefix reuse: looking up, probing and loading a
// prompt prefix the store holds, and handing each layer its loaded rows
// (worker_attention_backend.h).
#include <algorithm>
#include <memory>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "worker/model/worker_attention_backend.h"

namespace kvtier::model {
namespace {

// The first `n` tokens of `prompt` as the cache's token ids; a negative id
// is INVALID_ARGUMENT (it would key pages no prompt of real tokens has).
absl::StatusOr<std::vector<uint32_t>> TokenIds(absl::Span<const int> prompt, size_t n) {
  std::vector<uint32_t> ids;
  ids.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    if (prompt[i] < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("prompt token ", i, " has the negative id ", prompt[i]));
    }
    ids.push_back(static_cast<uint32_t>(prompt[i]));
  }
  return ids;
}

}  // namespace

absl::StatusOr<std::vector<Hash128>> WorkerAttentionBackend::PrefixChain(
    absl::Span<const int> prompt) const {
  ASSIGN_OR_RETURN(std::vector<uint32_t> ids, TokenIds(prompt, prompt.size()));
  return cache_->PrefixChain(ids);
}

absl::StatusOr<uint32_t> WorkerAttentionBackend::LookupPrefix(absl::Span<const int> prompt,
                                                              uint32_t max_pages) {
  if (transfers_ == nullptr) {
    return absl::FailedPreconditionError("prefix reuse needs a page store");
  }
  ASSIGN_OR_RETURN(std::vector<Hash128> chain, PrefixChain(prompt));
  if (chain.size() > max_pages) chain.resize(max_pages);
  if (chain.empty()) return 0u;
  const uint32_t n_layers = static_cast<uint32_t>(shape_.n_layers);
  auto found = std::make_shared<uint32_t>(0);
  ASSIGN_OR_RETURN(
      worker::TransferId id,
      transfers_->Submit("prefix lookup", 0, cache_->options().transfer_timeout,
                         [chain = std::move(chain), n_layers, found](worker::PageStoreBackend* b) {
                           absl::StatusOr<uint32_t> n = b->LookupPrefix(chain, n_layers);
                           if (!n.ok()) return worker::TransferResult{n.status(), {}};
                           *found = std::min<uint32_t>(*n, chain.size());
                           return worker::TransferResult{};
                         }));
  const worker::TransferResult result = transfers_->Wait(id);
  RETURN_IF_ERROR(result.status);
  return *found;
}

absl::StatusOr<PrefixFetchStats> WorkerAttentionBackend::ProbePrefix(
    absl::Span<const int> prompt, uint32_t n_pages) {
  if (transfers_ == nullptr) {
    return absl::FailedPreconditionError("prefix reuse needs a page store");
  }
  const size_t tokens = size_t{n_pages} * page_size();
  if (n_pages == 0 || tokens > prompt.size()) {
    return absl::InvalidArgumentError(absl::StrCat("probe of ", n_pages, " pages"));
  }
  ASSIGN_OR_RETURN(std::vector<Hash128> chain, PrefixChain(prompt.first(tokens)));
  // Declared before the fetch: its end waits for what still writes here.
  PromptRows k(tokens * shape_.kv_dim()), v(tokens * shape_.kv_dim());
  ASSIGN_OR_RETURN(std::unique_ptr<PrefixFetch> fetch,
                   PrefixFetch::Start(transfers_.get(), std::move(chain), 1,
                                      cache_->layout(), prefix_fetch_,
                                      {PrefixRows{.k = k.data(), .v = v.data()}}));
  RETURN_IF_ERROR(fetch->TakeLayer(0));
  return fetch->stats();
}

absl::Status WorkerAttentionBackend::LoadPrefix(SequenceId seq, absl::Span<const int> prompt,
                                                uint32_t n_pages) {
  auto it = sequences_.find(seq);
  if (it == sequences_.end()) {
    return absl::NotFoundError(absl::StrCat("sequence ", seq, " is not live"));
  }
  if (transfers_ == nullptr) {
    return absl::FailedPreconditionError("prefix reuse needs a page store");
  }
  SequenceState& state = it->second;
  const size_t tokens = size_t{n_pages} * page_size();
  if (n_pages == 0 || tokens > prompt.size() || state.fetch != nullptr ||
      state.layers[0].positions != 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "a prefix of ", n_pages, " pages loads only into an empty sequence of at least ",
        tokens, " prompt tokens"));
  }
  ASSIGN_OR_RETURN(std::vector<uint32_t> ids, TokenIds(prompt, tokens));
  std::vector<Hash128> chain = cache_->PrefixChain(ids);
  RETURN_IF_ERROR(cache_->AppendTokenIds(seq, ids));
  RETURN_IF_ERROR(cache_->AdoptStoredPrefix(seq, n_pages));
  // Room for the whole prompt, so that the rest's rows append without
  // moving the loaded prefix (several hundred MiB at 8K tokens); the
  // prefix's rows are the load's to write (not zeroed first).
  const size_t prompt_floats = prompt.size() * shape_.kv_dim();
  std::vector<PrefixRows> rows;
  for (LayerState& l : state.layers) {
    prompt_buffers_.Reserve(l.prompt_k, prompt_floats);
    prompt_buffers_.Reserve(l.prompt_v, prompt_floats);
    l.prompt_k.resize(tokens * shape_.kv_dim());
    l.prompt_v.resize(tokens * shape_.kv_dim());
    rows.push_back(PrefixRows{.k = l.prompt_k.data(), .v = l.prompt_v.data()});
  }
  absl::StatusOr<std::unique_ptr<PrefixFetch>> fetch =
      PrefixFetch::Start(transfers_.get(), std::move(chain), shape_.n_layers, cache_->layout(),
                         prefix_fetch_, std::move(rows));
  if (!fetch.ok()) {
    for (LayerState& l : state.layers) {
      l.prompt_k.clear();
      l.prompt_v.clear();
    }
    return fetch.status();
  }
  state.fetch = *std::move(fetch);
  for (LayerState& l : state.layers) {
    l.awaiting_prefix = true;
    l.prompt_tokens = static_cast<int>(tokens);
    l.positions = static_cast<int>(tokens);
  }
  return absl::OkStatus();
}

absl::Status WorkerAttentionBackend::TakePrefix(SequenceId seq, int layer, LayerState& s) {
  SequenceState& state = sequences_.at(seq);
  s.awaiting_prefix = false;
  absl::Status taken = state.fetch->TakeLayer(layer);
  if (layer + 1 == shape_.n_layers || !taken.ok()) {
    state.fetch_stats = state.fetch->stats();
    if (layer + 1 == shape_.n_layers) state.fetch.reset();
  }
  if (!taken.ok()) state.reuse_failed = true;
  return taken;
}

absl::StatusOr<bool> WorkerAttentionBackend::reuse_failed(SequenceId seq) const {
  auto it = sequences_.find(seq);
  if (it == sequences_.end()) {
    return absl::NotFoundError(absl::StrCat("sequence ", seq, " is not live"));
  }
  return it->second.reuse_failed;
}

absl::StatusOr<PrefixFetchStats> WorkerAttentionBackend::prefix_stats(SequenceId seq) const {
  auto it = sequences_.find(seq);
  if (it == sequences_.end()) {
    return absl::NotFoundError(absl::StrCat("sequence ", seq, " is not live"));
  }
  return it->second.fetch != nullptr ? it->second.fetch->stats() : it->second.fetch_stats;
}

}  // namespace kvtier::model
