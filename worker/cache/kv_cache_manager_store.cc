// KvCacheManager's traffic with the page store: backups of full pages
// (asynchronous, reaped per sequence), the sequence's pin, and recalls of
// evicted pages chosen by the policy's plan.
#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/checksum.h"
#include "common/log.h"
#include "common/status_macros.h"
#include "worker/cache/kv_cache_manager.h"
#include "worker/cache/kv_cache_sequence.h"

namespace kvtier::worker {

absl::Status KvCacheManager::SubmitBackups(Sequence& seq, uint32_t layer,
                                           std::vector<StoredPage> pages) {
  std::vector<std::pair<uint32_t, int32_t>> members;
  std::vector<PageKey> keys;
  uint64_t bytes = 0;
  for (const StoredPage& p : pages) {
    // The pages of one call are consecutive and end at the newest full page.
    keys.push_back(p.key);
    bytes += p.bytes.size();
  }
  const int32_t last_full = static_cast<int32_t>(seq.layers[layer].n_digested) - 1;
  for (size_t i = 0; i < pages.size(); ++i) {
    members.emplace_back(layer, last_full - static_cast<int32_t>(pages.size() - 1 - i));
  }
  const int n = static_cast<int>(pages.size());
  auto shared = std::make_shared<std::vector<StoredPage>>(std::move(pages));
  std::shared_ptr<SequencePin> pin = seq.pin;
  const uint64_t ttl_ms = options_.pin_ttl_ms;
  PageTransferQueue::Work work = [shared, pin, keys, ttl_ms](PageStoreBackend* backend) {
    TransferResult result{backend->Put(*shared), {}};
    if (!result.status.ok()) return result;
    // Pin only what is stored, so a pin never refers to a missing page;
    // never after the sequence ended (a backup past its deadline); and while
    // the pin is lost, leave the pages to RepinIfLost.
    absl::MutexLock lock(&pin->mu);
    if (pin->released) return result;
    if (pin->lost) {
      pin->uncovered.insert(pin->uncovered.end(), keys.begin(), keys.end());
      return result;
    }
    absl::StatusOr<std::string> id = backend->Pin(keys, ttl_ms, pin->pin_id);
    if (id.ok()) {
      pin->pin_id = *std::move(id);
    } else {
      result.status = id.status();
    }
    return result;
  };
  const std::string what = absl::StrCat("backup of ", n, " pages of sequence ", seq.id,
                                        " layer ", layer);
  while (true) {
    absl::StatusOr<TransferId> id =
        transfers_->Submit(what, n, options_.transfer_timeout, work);
    if (id.ok()) {
      for (const auto& [l, p] : members) seq.layers[l].puts[p] = *id;
      seq.puts.emplace(*id, std::move(members));
      counters_.pages_backed_up += n;
      counters_.bytes_backed_up += bytes;
      return absl::OkStatus();
    }
    // Back-pressure: a full window waits for this sequence's oldest backup.
    if (!absl::IsResourceExhausted(id.status()) || seq.puts.empty()) {
      // The pages are full but will never be stored: fail the sequence
      // rather than evict them later without a copy.
      seq.failed = absl::Status(id.status().code(),
                                absl::StrCat("backup not submitted: ", id.status().message()));
      return id.status();
    }
    TransferId oldest = seq.puts.begin()->first;
    for (const auto& [tid, m] : seq.puts) oldest = std::min(oldest, tid);
    RETURN_IF_ERROR(WaitBackup(seq, oldest));
  }
}

absl::Status KvCacheManager::AdoptStoredPrefix(uint64_t seq_id, uint32_t n_pages) {
  ASSIGN_OR_RETURN(Sequence * seq, Find(seq_id));
  const uint32_t p = options_.layout.page_size;
  for (const PageTable& t : seq->layers) {
    if (t.n_tokens != 0) {
      return absl::FailedPreconditionError(
          absl::StrCat("sequence ", seq_id, " already holds K/V; a stored prefix comes first"));
    }
  }
  if (size_t{n_pages} * p > seq->tokens.size()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "a stored prefix of ", n_pages, " pages needs ", size_t{n_pages} * p,
        " token ids; sequence ", seq_id, " has ", seq->tokens.size()));
  }
  seq->stored_prefix_pages = n_pages;
  seq->prefix_pin_pending = policy_->offloads() && n_pages > 0;
  return absl::OkStatus();
}

absl::Status KvCacheManager::PinStoredPrefix(Sequence& seq) {
  seq.prefix_pin_pending = false;
  const uint64_t seq_id = seq.id;
  const uint32_t n_pages = seq.stored_prefix_pages;
  std::vector<PageKey> keys;
  keys.reserve(size_t{n_pages} * options_.n_layers);
  for (uint32_t page = 0; page < n_pages; ++page) {
    const Hash128& h = PageHash(seq, page);
    for (uint32_t l = 0; l < options_.n_layers; ++l) keys.push_back(PageKey{.hash = h, .layer = l});
  }
  std::shared_ptr<SequencePin> pin = seq.pin;
  const uint64_t ttl_ms = options_.pin_ttl_ms;
  auto shared = std::make_shared<std::vector<PageKey>>(std::move(keys));
  PageTransferQueue::Work work = [shared, pin, ttl_ms](PageStoreBackend* backend) {
    absl::MutexLock lock(&pin->mu);
    if (pin->released) return TransferResult{};
    if (pin->lost) {
      pin->uncovered.insert(pin->uncovered.end(), shared->begin(), shared->end());
      return TransferResult{};
    }
    absl::StatusOr<std::string> id = backend->Pin(*shared, ttl_ms, pin->pin_id);
    if (!id.ok()) return TransferResult{id.status(), {}};
    pin->pin_id = *std::move(id);
    return TransferResult{};
  };
  // Tracked as a backup with no pages: Cancel waits for it, and a failure
  // fails the sequence (its evicted prefix pages would have no safe copy).
  ASSIGN_OR_RETURN(TransferId id,
                   transfers_->Submit(absl::StrCat("pin of the stored prefix of sequence ",
                                                   seq_id),
                                      0, options_.transfer_timeout, std::move(work)));
  seq.puts.emplace(id, std::vector<std::pair<uint32_t, int32_t>>());
  return absl::OkStatus();
}

absl::Status KvCacheManager::WaitBackup(Sequence& seq, TransferId id) {
  TransferResult result = transfers_->Wait(id);
  return ApplyBackupResult(seq, id, result);
}

absl::Status KvCacheManager::ApplyBackupResult(Sequence& seq, TransferId id,
                                               const TransferResult& result) {
  auto it = seq.puts.find(id);
  if (it == seq.puts.end()) return absl::OkStatus();
  for (const auto& [layer, page] : it->second) {
    seq.layers[layer].OnBackupDone(page, result.status.ok());
  }
  seq.puts.erase(it);
  if (!result.status.ok() && seq.failed.ok()) {
    seq.failed = absl::Status(result.status.code(),
                              absl::StrCat("backup failed: ", result.status.message()));
  }
  return result.status;
}

absl::Status KvCacheManager::RepinIfLost(Sequence& seq) {
  {
    absl::MutexLock lock(&seq.pin->mu);
    if (!seq.pin->lost) return absl::OkStatus();
  }
  // Every page whose backup completed; pages still on their way out are
  // pinned by their own backups.
  std::vector<PageKey> keys;
  for (uint32_t l = 0; l < options_.n_layers; ++l) {
    const PageTable& t = seq.layers[l];
    for (uint32_t p = 0; p < t.n_pages(); ++p) {
      const PageState state = t.states[p];
      if (t.puts[p] == 0 && (state == PageState::kResident || state == PageState::kEvicted ||
                             state == PageState::kRecalling)) {
        keys.push_back(PageKey{.hash = PageHash(seq, p), .layer = l});
      }
    }
  }
  std::shared_ptr<SequencePin> pin = seq.pin;
  const uint64_t ttl_ms = options_.pin_ttl_ms;
  auto keys_shared = std::make_shared<std::vector<PageKey>>(std::move(keys));
  const size_t batch = options_.max_put_batch_pages;
  PageTransferQueue::Work work = [pin, ttl_ms, keys_shared, batch](PageStoreBackend* backend) {
    absl::MutexLock lock(&pin->mu);
    if (pin->released || !pin->lost) return TransferResult{};
    std::vector<PageKey> all = *keys_shared;
    all.insert(all.end(), pin->uncovered.begin(), pin->uncovered.end());
    std::string id;  // a new pin: the old id is unknown to the store
    for (size_t begin = 0; begin < all.size(); begin += batch) {
      const size_t end = std::min(all.size(), begin + batch);
      absl::StatusOr<std::string> pinned = backend->Pin(
          absl::MakeConstSpan(all.data() + begin, end - begin), ttl_ms, id);
      if (!pinned.ok()) return TransferResult{pinned.status(), {}};
      id = *std::move(pinned);
    }
    pin->pin_id = std::move(id);  // empty when nothing was stored yet: the next backup pins
    pin->lost = false;
    pin->uncovered.clear();
    return TransferResult{};
  };
  ASSIGN_OR_RETURN(TransferId id,
                   transfers_->Submit(absl::StrCat("re-pin of sequence ", seq.id), 0,
                                      options_.transfer_timeout, std::move(work)));
  const TransferResult result = transfers_->Wait(id);
  if (!result.status.ok()) {
    return absl::Status(result.status.code(),
                        absl::StrCat("sequence ", seq.id, " lost its store pin and could not pin "
                                     "its pages again: ", result.status.message()));
  }
  return absl::OkStatus();
}

absl::Status KvCacheManager::ReapBackups(uint64_t seq_id, bool wait) {
  ASSIGN_OR_RETURN(Sequence * seq, Find(seq_id));
  RETURN_IF_ERROR(RepinIfLost(*seq));
  std::vector<TransferId> ids;
  for (const auto& [id, members] : seq->puts) ids.push_back(id);
  std::sort(ids.begin(), ids.end());
  absl::Status first;
  for (TransferId id : ids) {
    if (!wait) {
      absl::StatusOr<TransferState> state = transfers_->State(id);
      if (state.ok() && (*state == TransferState::kQueued || *state == TransferState::kRunning)) {
        continue;
      }
    }
    first.Update(WaitBackup(*seq, id));
  }
  return first;
}

absl::Status KvCacheManager::ApplyPlan(uint64_t seq_id, uint32_t layer, const PagePlan& plan) {
  ASSIGN_OR_RETURN(Sequence * seq, Find(seq_id));
  if (layer >= options_.n_layers) return absl::InvalidArgumentError("layer out of range");
  PageTable& t = seq->layers[layer];
  const uint32_t n_pages = t.n_pages();
  RETURN_IF_ERROR(t.CheckPlan(plan, policy_->name(), options_.layout.n_kv_heads));
  if (!t.recalls.empty()) return absl::FailedPreconditionError("recalls of the last plan pending");
  // Evict first: the freed slots take the recalled pages.
  std::vector<uint8_t> keep(n_pages, 0);
  for (int32_t p : plan.resident) keep[p] = 1;
  for (uint32_t p = 0; p < n_pages; ++p) {
    if (!keep[p] && HoldsSlot(t.states[p])) RETURN_IF_ERROR(Evict(*seq, layer, p));
  }
  std::vector<int32_t> recall;
  for (int32_t p : plan.resident) {
    PageState state = t.states[p];
    if (state == PageState::kEvictedBackingUp) {
      // A page still on its way out: its put must land before it can be read back.
      RETURN_IF_ERROR(WaitBackup(*seq, t.puts[p]));
      state = t.states[p];
    }
    if (HoldsSlot(state)) continue;
    if (state != PageState::kEvicted) {
      return absl::DataLossError(absl::StrCat("page ", p, " of sequence ", seq_id, " layer ",
                                              layer, " cannot be recalled: it is ",
                                              PageStateName(state)));
    }
    recall.push_back(p);
  }
  const int max_batch = static_cast<int>(options_.max_put_batch_pages);
  for (size_t begin = 0; begin < recall.size(); begin += max_batch) {
    const size_t end = std::min(recall.size(), begin + max_batch);
    std::vector<int32_t> pages(recall.begin() + begin, recall.begin() + end);
    std::vector<PageKey> keys;
    for (int32_t p : pages) keys.push_back(PageKey{.hash = PageHash(*seq, p), .layer = layer});
    ASSIGN_OR_RETURN(TransferId id,
                     transfers_->SubmitGet(std::move(keys), options_.transfer_timeout));
    for (int32_t p : pages) {
      ASSIGN_OR_RETURN(t.slots[p], pools_[layer]->Allocate());
      t.states[p] = PageState::kRecalling;
      ++t.slots_held;
    }
    t.recalls.emplace_back(id, std::move(pages));
  }
  return absl::OkStatus();
}

absl::Status KvCacheManager::FinishRecalls(uint64_t seq_id, uint32_t layer) {
  ASSIGN_OR_RETURN(Sequence * seq, Find(seq_id));
  if (layer >= options_.n_layers) return absl::InvalidArgumentError("layer out of range");
  PageTable& t = seq->layers[layer];
  absl::Status first;
  auto give_back = [&](int32_t p, PageState state) { t.FreeSlot(*pools_[layer], p, state); };
  for (auto& [id, pages] : t.recalls) {
    TransferResult result = transfers_->Wait(id);
    if (!result.status.ok()) {
      for (int32_t p : pages) give_back(p, PageState::kEvicted);
      first.Update(absl::Status(
          result.status.code(),
          absl::StrCat("recall of ", pages.size(), " pages of sequence ", seq_id, " layer ",
                       layer, " failed: ", result.status.message())));
      continue;
    }
    // Every page is checked first, then the batch goes to the pool in one
    // upload (on a GPU: pinned staging and asynchronous copies).
    std::vector<std::string> recomputed;
    recomputed.reserve(pages.size());  // the ranges point into these
    std::vector<UploadRange> ranges;
    std::vector<int32_t> checked;
    for (size_t i = 0; i < pages.size(); ++i) {
      absl::StatusOr<const std::string*> bytes =
          i < result.pages.size()
              ? CheckRecalled(*seq, layer, pages[i], result.pages[i], &recomputed)
              : absl::InternalError("store answered fewer pages than asked");
      if (!bytes.ok()) {
        give_back(pages[i], PageState::kLost);
        first.Update(bytes.status());
        continue;
      }
      ranges.push_back(UploadRange{pools_[layer]->SlotData(t.slots[pages[i]]), (*bytes)->data(),
                                   (*bytes)->size()});
      checked.push_back(pages[i]);
    }
    absl::Status uploaded = device_->Upload(ranges);
    for (int32_t p : checked) {
      if (!uploaded.ok()) {
        give_back(p, PageState::kLost);
        continue;
      }
      t.states[p] = PageState::kResident;
      ++counters_.pages_recalled;
      counters_.bytes_recalled += pools_[layer]->page_bytes();
    }
    if (!uploaded.ok()) {
      first.Update(absl::Status(uploaded.code(),
                                absl::StrCat("recalled pages of sequence ", seq_id, " layer ",
                                             layer, " did not reach the pool: ",
                                             uploaded.message())));
    }
  }
  t.recalls.clear();
  return first;
}

absl::StatusOr<const std::string*> KvCacheManager::CheckRecalled(
    Sequence& seq, uint32_t layer, int32_t page, const FetchedPage& fetched,
    std::vector<std::string>* recomputed) {
  PageTable& t = seq.layers[layer];
  const size_t page_bytes = pools_[layer]->page_bytes();
  const std::string where =
      absl::StrCat("page ", page, " of sequence ", seq.id, " layer ", layer);
  const std::string* bytes = &fetched.bytes;
  if (fetched.status != FetchStatus::kOk) {
    if (!recomputer_) {
      return absl::DataLossError(absl::StrCat(where, " is ", FetchStatusName(fetched.status),
                                              " in the store and no recomputer is set"));
    }
    ASSIGN_OR_RETURN(std::string redone, recomputer_(seq.id, layer, page));
    recomputed->push_back(std::move(redone));
    bytes = &recomputed->back();
    ++counters_.pages_recomputed;
  } else if (!(fetched.layout == options_.layout)) {
    return absl::DataLossError(absl::StrCat(where, " came back with layout ",
                                            fetched.layout.DebugString()));
  }
  if (bytes->size() != page_bytes) {
    return absl::DataLossError(absl::StrCat(where, " came back with ", bytes->size(),
                                            " bytes, not ", page_bytes));
  }
  const uint64_t checksum = PageChecksum(bytes->data(), bytes->size());
  if (checksum != t.checksums[page]) {
    // Keys are content-addressed (tokens, layer, model, layout, tenant), and
    // the store keeps the first copy of a key: a worker whose kernels round
    // differently (another CPU, another build) may have stored this page
    // before ours. Its bytes hold the same tokens' K/V and match the
    // checksum the store keeps for them, so they are served as stored and
    // counted. Anything else, a recomputed page included, must be exactly
    // what was backed up.
    if (bytes != &fetched.bytes || checksum != fetched.checksum) {
      return absl::DataLossError(
          absl::StrCat(where, " does not match the checksum taken when it was backed up"));
    }
    t.checksums[page] = checksum;
    ++counters_.pages_recalled_foreign;
  }
  return bytes;
}

}  // namespace kvtier::worker
