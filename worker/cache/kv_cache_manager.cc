#include "worker/cache/kv_cache_manager.h"

#include <algorithm>
#include <cassert>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "common/checksum.h"
#include "common/log.h"
#include "common/status_macros.h"
#include "kernels/digest.h"
#include "kernels/dtype.h"
#include "worker/cache/kv_cache_sequence.h"
#include "worker/policy/token_policy.h"

namespace kvtier::worker {

absl::StatusOr<std::unique_ptr<KvCacheManager>> KvCacheManager::Create(
    const KvCacheOptions& options, Device* device, Policy* policy,
    PageTransferQueue* transfers) {
  RETURN_IF_ERROR(options.Validate());
  if (device == nullptr || policy == nullptr) {
    return absl::InvalidArgumentError("device and policy are required");
  }
  if (policy->offloads() && transfers == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("policy ", std::string(policy->name()), " offloads pages and needs a transfer queue"));
  }
  std::unique_ptr<KvCacheManager> manager(
      new KvCacheManager(options, device, policy, transfers));
  for (uint32_t l = 0; l < options.n_layers; ++l) {
    ASSIGN_OR_RETURN(std::unique_ptr<PagePool> pool,
                     PagePool::Create(device, options.layout, options.pool_pages_per_layer));
    manager->pools_.push_back(std::move(pool));
  }
  if (policy->offloads()) {
    // Three extensions per TTL: a late or failed one leaves two more.
    const absl::Duration period =
        std::max(absl::Milliseconds(options.pin_ttl_ms) / 3, absl::Milliseconds(10));
    manager->pin_keeper_ = std::make_unique<PinKeeper>(transfers, options.pin_ttl_ms, period,
                                                       options.transfer_timeout);
  }
  return manager;
}

KvCacheManager::KvCacheManager(const KvCacheOptions& options, Device* device, Policy* policy,
                               PageTransferQueue* transfers)
    : options_(options),
      device_(device),
      policy_(policy),
      transfers_(transfers),
      chain_seed_(KeyChain::Seed(options.tenant_salt, options.model_fingerprint, options.layout)),
      digest_format_{.kind = policy->digest_kind(),
                     .type = static_cast<kernels::ScalarType>(options.digest_dtype),
                     .slot_elements = kernels::DigestSlotElements(
                         policy->digest_kind(), options.layout.n_kv_heads,
                         options.layout.head_dim)} {}

KvCacheManager::~KvCacheManager() {
  std::vector<uint64_t> ids;
  for (const auto& [id, seq] : sequences_) ids.push_back(id);
  for (uint64_t id : ids) {
    if (absl::Status s = Cancel(id); !s.ok()) {
      KVTIER_LOG(WARNING) << "cancel at shutdown failed seq=" << id << " status=" << s;
    }
  }
}

absl::StatusOr<KvCacheManager::Sequence*> KvCacheManager::Find(uint64_t seq_id) {
  auto it = sequences_.find(seq_id);
  if (it == sequences_.end()) return absl::NotFoundError(absl::StrCat("unknown sequence ", seq_id));
  if (!it->second->failed.ok()) {
    return absl::FailedPreconditionError(
        absl::StrCat("sequence ", seq_id, " has failed: ", it->second->failed.ToString()));
  }
  return it->second.get();
}

absl::StatusOr<const KvCacheManager::Sequence*> KvCacheManager::Find(uint64_t seq_id) const {
  auto it = sequences_.find(seq_id);
  if (it == sequences_.end()) return absl::NotFoundError(absl::StrCat("unknown sequence ", seq_id));
  return it->second.get();
}

absl::Status KvCacheManager::AddSequence(uint64_t seq_id,
                                         absl::Span<const uint32_t> budget_pages) {
  if (budget_pages.size() != options_.n_layers) {
    return absl::InvalidArgumentError(absl::StrCat("budget list has ", budget_pages.size(),
                                                   " layers, the cache ", options_.n_layers));
  }
  for (uint32_t l = 0; l < options_.n_layers; ++l) {
    if (budget_pages[l] < 1) {
      return absl::InvalidArgumentError(absl::StrCat("budget of layer ", l, " is 0 pages"));
    }
  }
  if (sequences_.contains(seq_id)) {
    return absl::AlreadyExistsError(absl::StrCat("sequence ", seq_id, " exists"));
  }
  if (sequences_.size() >= options_.max_sequences) {
    return absl::ResourceExhaustedError(
        absl::StrCat("sequence table full (", options_.max_sequences, ")"));
  }
  for (uint32_t l = 0; l < options_.n_layers; ++l) {
    if (absl::Status s = pools_[l]->Reserve(budget_pages[l]); !s.ok()) {
      for (uint32_t j = 0; j < l; ++j) pools_[j]->Unreserve(budget_pages[j]);
      return absl::ResourceExhaustedError(
          absl::StrCat("layer ", l, " cannot admit sequence ", seq_id, ": ", s.message()));
    }
  }
  auto seq = std::make_unique<Sequence>();
  seq->id = seq_id;
  seq->layers.resize(options_.n_layers);
  for (uint32_t l = 0; l < options_.n_layers; ++l) seq->layers[l].budget_pages = budget_pages[l];
  if (pin_keeper_ != nullptr) pin_keeper_->Keep(seq->pin);
  sequences_.emplace(seq_id, std::move(seq));
  return absl::OkStatus();
}

absl::Status KvCacheManager::AppendTokenIds(uint64_t seq_id, absl::Span<const uint32_t> tokens) {
  ASSIGN_OR_RETURN(Sequence * seq, Find(seq_id));
  const size_t max_tokens = size_t{options_.max_pages_per_sequence} * options_.layout.page_size;
  if (seq->tokens.size() + tokens.size() > max_tokens) {
    return absl::ResourceExhaustedError(absl::StrCat("sequence ", seq_id, " would exceed ",
                                                     max_tokens, " tokens"));
  }
  seq->tokens.insert(seq->tokens.end(), tokens.begin(), tokens.end());
  return absl::OkStatus();
}

std::vector<Hash128> KvCacheManager::PrefixChain(absl::Span<const uint32_t> tokens) const {
  return KeyChain::Chain(chain_seed_, tokens, options_.layout.page_size);
}

const Hash128& KvCacheManager::PageHash(Sequence& seq, uint32_t page) {
  const uint32_t p = options_.layout.page_size;
  while (seq.hashes.size() <= page) {
    const size_t i = seq.hashes.size();
    const Hash128& prev = i == 0 ? chain_seed_ : seq.hashes[i - 1];
    seq.hashes.push_back(
        KeyChain::Next(prev, absl::MakeConstSpan(seq.tokens.data() + i * p, p)));
  }
  return seq.hashes[page];
}

absl::StatusOr<LayerView> KvCacheManager::View(uint64_t seq_id, uint32_t layer) const {
  ASSIGN_OR_RETURN(const Sequence* seq, Find(seq_id));
  if (layer >= options_.n_layers) return absl::InvalidArgumentError("layer out of range");
  return seq->layers[layer].View(layer, options_.layout.page_size);
}

absl::StatusOr<const void*> KvCacheManager::Digests(uint64_t seq_id, uint32_t layer) const {
  ASSIGN_OR_RETURN(const Sequence* seq, Find(seq_id));
  if (layer >= options_.n_layers) return absl::InvalidArgumentError("layer out of range");
  return seq->layers[layer].digests.data();
}

absl::StatusOr<const void*> KvCacheManager::DeviceDigests(uint64_t seq_id, uint32_t layer) {
  ASSIGN_OR_RETURN(Sequence * seq, Find(seq_id));
  if (layer >= options_.n_layers) return absl::InvalidArgumentError("layer out of range");
  seq->layers[layer].digests_scored = true;
  return seq->layers[layer].MirrorDigests(device_, digest_format_.slot_bytes());
}

uint64_t KvCacheManager::ScoredDigestBytes(uint32_t layer) const {
  uint64_t bytes = 0;
  for (const auto& [id, seq] : sequences_) {
    const PageTable& t = seq->layers[layer];
    if (t.digests_scored) bytes += uint64_t{t.n_digested} * digest_format_.slot_bytes();
  }
  return bytes;
}

absl::Status KvCacheManager::OpenPage(Sequence& seq, uint32_t layer) {
  PageTable& t = seq.layers[layer];
  if (t.states.size() >= options_.max_pages_per_sequence) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "sequence ", seq.id, " layer ", layer, " reached ", options_.max_pages_per_sequence,
        " pages"));
  }
  if (t.slots_held >= t.budget_pages) {
    const int32_t victim = policy_->AppendVictim(t.View(layer, options_.layout.page_size));
    if (victim < 0 || static_cast<size_t>(victim) >= t.states.size() ||
        !IsResident(t.states[victim]) || t.states[victim] == PageState::kFilling) {
      return absl::ResourceExhaustedError(absl::StrFormat(
          "sequence %d layer %d: budget of %d pages is full and policy %s frees none", seq.id,
          layer, t.budget_pages, std::string(policy_->name())));
    }
    RETURN_IF_ERROR(Evict(seq, layer, victim));
  }
  ASSIGN_OR_RETURN(int32_t slot, pools_[layer]->Allocate());
  t.states.push_back(PageState::kFilling);
  t.slots.push_back(slot);
  t.checksums.push_back(0);
  t.puts.push_back(0);
  ++t.slots_held;
  return absl::OkStatus();
}

absl::Status KvCacheManager::Evict(Sequence& seq, uint32_t layer, int32_t page) {
  PageTable& t = seq.layers[layer];
  const PageState state = t.states[page];
  if (state != PageState::kBackingUp && state != PageState::kResident) {
    return absl::InternalError(absl::StrCat("cannot evict page ", page, " of sequence ", seq.id,
                                            " layer ", layer, " in state ",
                                            PageStateName(state)));
  }
  // A page whose put is in flight keeps its copy in the transfer.
  const bool stored = policy_->offloads() || state == PageState::kBackingUp;
  t.FreeSlot(*pools_[layer], page,
             state == PageState::kBackingUp ? PageState::kEvictedBackingUp
             : stored                       ? PageState::kEvicted
                                            : PageState::kDropped);
  ++(stored ? counters_.pages_evicted : counters_.pages_dropped);
  return absl::OkStatus();
}

absl::Status KvCacheManager::AppendKv(uint64_t seq_id, uint32_t layer, const float* k,
                                      const float* v, uint32_t n) {
  ASSIGN_OR_RETURN(Sequence * seq, Find(seq_id));
  if (layer >= options_.n_layers) return absl::InvalidArgumentError("layer out of range");
  if (n > 0 && (k == nullptr || v == nullptr)) return absl::InvalidArgumentError("null k or v");
  PageTable& t = seq->layers[layer];
  if (t.n_tokens + n > seq->tokens.size()) {
    return absl::FailedPreconditionError(
        absl::StrCat("layer ", layer, " would hold ", t.n_tokens + n, " tokens but only ",
                     seq->tokens.size(), " token ids are known"));
  }
  RETURN_IF_ERROR(ReapBackups(seq_id, /*wait=*/false));
  if (seq->prefix_pin_pending) RETURN_IF_ERROR(PinStoredPrefix(*seq));
  const PageLayout& lay = options_.layout;
  const auto type = static_cast<kernels::ScalarType>(lay.dtype);
  const size_t row = size_t{lay.n_kv_heads} * lay.head_dim;  // elements per token
  const size_t row_bytes = row * DTypeBytes(lay.dtype);
  const size_t v_offset_bytes = lay.ElementsPerTensor() * DTypeBytes(lay.dtype);
  std::vector<StoredPage> backups;
  // Tokens are converted in host memory and written a page's run at a time
  // through the device, so a pool in GPU memory is never dereferenced here.
  std::vector<uint8_t> k_rows, v_rows;
  for (uint32_t i = 0; i < n;) {
    const uint32_t off = t.n_tokens % lay.page_size;
    if (off == 0) RETURN_IF_ERROR(OpenPage(*seq, layer));
    const int32_t page = static_cast<int32_t>(t.states.size()) - 1;
    const uint32_t m = std::min(n - i, lay.page_size - off);
    const void* k_src = k + i * row;
    const void* v_src = v + i * row;
    if (lay.dtype != DType::kF32) {  // fp32 rows are the page's bytes as they are
      k_rows.resize(m * row_bytes);
      v_rows.resize(m * row_bytes);
      for (size_t e = 0; e < m * row; ++e) {
        kernels::StoreFromFloat(k_rows.data(), type, e, k[i * row + e]);
        kernels::StoreFromFloat(v_rows.data(), type, e, v[i * row + e]);
      }
      k_src = k_rows.data();
      v_src = v_rows.data();
    }
    PagePool& pool = *pools_[layer];
    RETURN_IF_ERROR(pool.WriteSlot(t.slots[page], off * row_bytes, k_src, m * row_bytes));
    RETURN_IF_ERROR(
        pool.WriteSlot(t.slots[page], v_offset_bytes + off * row_bytes, v_src, m * row_bytes));
    t.n_tokens += m;
    i += m;
    if (off + m == lay.page_size) RETURN_IF_ERROR(OnPageFull(*seq, layer, page, &backups));
    if (backups.size() >= options_.max_put_batch_pages) {
      RETURN_IF_ERROR(SubmitBackups(*seq, layer, std::move(backups)));
      backups.clear();
    }
  }
  if (!backups.empty()) RETURN_IF_ERROR(SubmitBackups(*seq, layer, std::move(backups)));
  return absl::OkStatus();
}

absl::Status KvCacheManager::OnPageFull(Sequence& seq, uint32_t layer, int32_t page,
                                        std::vector<StoredPage>* backups) {
  PageTable& t = seq.layers[layer];
  const PageLayout& lay = options_.layout;
  // One host copy of the full page serves the digest, the checksum and the
  // backup, on every backend (digests are host memory: kernel_dispatch.h).
  // On the CPU backend that is the slot itself. It is copied only for a
  // backup: loaded prefix pages need none.
  PagePool& pool = *pools_[layer];
  const size_t page_bytes = pool.page_bytes();
  const char* bytes = reinterpret_cast<const char*>(pool.SlotData(t.slots[page]));
  if (pool.device()->kind() != DeviceKind::kCpu) {
    page_scratch_.resize(page_bytes);
    RETURN_IF_ERROR(pool.ReadSlot(t.slots[page], 0, page_scratch_.data(), page_bytes));
    bytes = page_scratch_.data();
  }
  RETURN_IF_ERROR(t.AppendDigest(bytes, lay, digest_format_));

  t.checksums[page] = PageChecksum(bytes, page_bytes);
  if (static_cast<uint32_t>(page) < seq.stored_prefix_pages) {
    // Loaded from the store: the stored copy is these bytes under this key.
    t.states[page] = PageState::kResident;
    ++counters_.pages_adopted;
    return absl::OkStatus();
  }
  if (!policy_->offloads()) {
    t.states[page] = PageState::kResident;
    return absl::OkStatus();
  }
  t.states[page] = PageState::kBackingUp;
  StoredPage stored;
  stored.key = PageKey{.hash = PageHash(seq, page), .layer = layer};
  stored.layout = lay;
  stored.checksum = t.checksums[page];
  stored.bytes.assign(bytes, page_bytes);
  backups->push_back(std::move(stored));
  return absl::OkStatus();
}

absl::StatusOr<uint32_t> KvCacheManager::TokenIdCount(uint64_t seq_id) const {
  ASSIGN_OR_RETURN(const Sequence* seq, Find(seq_id));
  return static_cast<uint32_t>(seq->tokens.size());
}

absl::Status KvCacheManager::AttentionPages(uint64_t seq_id, uint32_t layer,
                                            absl::Span<const int32_t> pages,
                                            std::vector<int32_t>* slots,
                                            int32_t* last_page_len) const {
  ASSIGN_OR_RETURN(const Sequence* seq, Find(seq_id));
  if (layer >= options_.n_layers) return absl::InvalidArgumentError("layer out of range");
  return seq->layers[layer].AttentionSlots(pages, options_.layout.page_size, slots,
                                           last_page_len);
}

void KvCacheManager::ReleaseAll(Sequence& seq) {
  for (uint32_t l = 0; l < options_.n_layers; ++l) {
    PageTable& t = seq.layers[l];
    for (auto& [id, pages] : t.recalls) transfers_->Abandon(id);
    t.recalls.clear();
    t.ReleaseSlots(*pools_[l]);
  }
}

absl::Status KvCacheManager::Cancel(uint64_t seq_id) {
  auto it = sequences_.find(seq_id);
  if (it == sequences_.end()) return absl::NotFoundError(absl::StrCat("unknown sequence ", seq_id));
  Sequence& seq = *it->second;
  absl::Status first;
  // Let in-flight backups finish so that no pin is created after the unpin.
  std::vector<TransferId> puts;
  for (const auto& [id, members] : seq.puts) puts.push_back(id);
  for (TransferId id : puts) {
    // A failed backup no longer matters: the pages are dropped with the sequence.
    if (absl::Status s = WaitBackup(seq, id); !s.ok()) {
      KVTIER_LOG(INFO) << "backup failed during cancel seq=" << seq_id << " status=" << s;
    }
  }
  ReleaseAll(seq);
  if (TokenPolicy* tp = policy_->AsTokenPolicy(); tp != nullptr) tp->EndSequence(seq_id);
  std::string pin_id;
  {
    absl::MutexLock lock(&seq.pin->mu);
    pin_id = std::exchange(seq.pin->pin_id, std::string());
    seq.pin->released = true;
  }
  if (!pin_id.empty()) {
    absl::StatusOr<TransferId> id = transfers_->Submit(
        absl::StrCat("unpin of sequence ", seq_id), 0, options_.transfer_timeout,
        [pin_id](PageStoreBackend* b) { return TransferResult{b->Unpin(pin_id), {}}; });
    first.Update(id.ok() ? transfers_->Wait(*id).status : id.status());
  }
  sequences_.erase(it);
  if (!first.ok()) {
    return absl::Status(first.code(), absl::StrCat("sequence ", seq_id,
                                                   " released, but its store pin was not: ",
                                                   first.message()));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> KvCacheManager::ResidentPageBytes(uint64_t seq_id, uint32_t layer,
                                                              uint32_t page) const {
  ASSIGN_OR_RETURN(const Sequence* seq, Find(seq_id));
  if (layer >= options_.n_layers) return absl::InvalidArgumentError("layer out of range");
  const PageTable& t = seq->layers[layer];
  if (page >= t.states.size() || !IsResident(t.states[page])) {
    return absl::FailedPreconditionError(absl::StrCat("page ", page, " is not resident"));
  }
  std::string bytes(pools_[layer]->page_bytes(), '\0');
  RETURN_IF_ERROR(pools_[layer]->ReadSlot(t.slots[page], 0, bytes.data(), bytes.size()));
  return bytes;
}

absl::StatusOr<PageKey> KvCacheManager::KeyOf(uint64_t seq_id, uint32_t layer,
                                              uint32_t page) const {
  ASSIGN_OR_RETURN(const Sequence* seq, Find(seq_id));
  if (layer >= options_.n_layers) return absl::InvalidArgumentError("layer out of range");
  if (page >= seq->hashes.size()) {
    return absl::FailedPreconditionError(absl::StrCat("page ", page, " has no key yet"));
  }
  return PageKey{.hash = seq->hashes[page], .layer = layer};
}

absl::StatusOr<std::string> KvCacheManager::PinId(uint64_t seq_id) const {
  ASSIGN_OR_RETURN(const Sequence* seq, Find(seq_id));
  absl::MutexLock lock(&seq->pin->mu);
  return seq->pin->pin_id;
}

absl::Status KvCacheManager::EvictTokens(uint64_t seq_id, uint32_t layer,
                                         absl::Span<const uint32_t> slots) {
  return EvictTokenLists(seq_id, layer, slots, 1);
}

absl::Status KvCacheManager::EvictHeadTokens(uint64_t seq_id, uint32_t layer,
                                             absl::Span<const uint32_t> slots_by_head) {
  return EvictTokenLists(seq_id, layer, slots_by_head, options_.layout.n_kv_heads);
}

absl::Status KvCacheManager::EvictTokenLists(uint64_t seq_id, uint32_t layer,
                                             absl::Span<const uint32_t> slots, uint32_t n_lists) {
  ASSIGN_OR_RETURN(Sequence * seq, Find(seq_id));
  if (layer >= options_.n_layers) return absl::InvalidArgumentError("layer out of range");
  if (policy_->offloads()) {
    return absl::FailedPreconditionError("token eviction would rewrite backed-up pages");
  }
  return seq->layers[layer].EvictTokens(*pools_[layer], slots, n_lists,
                                        digest_format_.slot_bytes());
}

absl::Status KvCacheManager::ReadTokens(uint64_t seq_id, uint32_t layer, std::vector<float>* k,
                                        std::vector<float>* v) const {
  ASSIGN_OR_RETURN(const Sequence* seq, Find(seq_id));
  if (layer >= options_.n_layers) return absl::InvalidArgumentError("layer out of range");
  return seq->layers[layer].ReadTokens(*pools_[layer], k, v);
}

}  // namespace kvtier::worker
