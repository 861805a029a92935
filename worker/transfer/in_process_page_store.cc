#include "worker/transfer/in_process_page_store.h"

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/checksum.h"

namespace kvtier::worker {

InProcessPageStore::~InProcessPageStore() {
  absl::MutexLock lock(&mu_);
  shutting_down_ = true;
  // Hung callers belong to other threads (the transfer queue's); wait until
  // they have left so none touches freed members.
  mu_.Await(absl::Condition(
      +[](int* active) { return *active == 0; }, &active_calls_));
}

absl::Status InProcessPageStore::EnterCall() {
  mu_.Await(absl::Condition(this, &InProcessPageStore::NotHung));
  if (shutting_down_) return absl::UnavailableError("in-process page store is shutting down");
  if (mode_ == Mode::kDown) return absl::UnavailableError("in-process page store is down");
  if (latency_us_ > 0) {
    const int64_t latency_us = latency_us_;
    mu_.Unlock();
    absl::SleepFor(absl::Microseconds(latency_us));
    mu_.Lock();
    if (shutting_down_) return absl::UnavailableError("in-process page store is shutting down");
  }
  return absl::OkStatus();
}

namespace {
// Decrements the active-call count on every exit path.
class CallScope {
 public:
  explicit CallScope(int* active) : active_(active) { ++*active_; }
  ~CallScope() { --*active_; }

 private:
  int* active_;
};
}  // namespace

absl::Status InProcessPageStore::Put(absl::Span<const StoredPage> pages) {
  absl::MutexLock lock(&mu_);
  CallScope scope(&active_calls_);
  if (absl::Status s = EnterCall(); !s.ok()) return s;
  ++put_calls_;
  if (pages.empty()) return absl::InvalidArgumentError("empty put batch");
  absl::flat_hash_set<PageKey> seen;
  for (const StoredPage& page : pages) {
    if (absl::Status s = page.layout.Validate(); !s.ok()) return s;
    if (page.bytes.size() != page.layout.PageBytes()) {
      return absl::InvalidArgumentError(
          absl::StrCat("page ", page.key.DebugString(), " has ", page.bytes.size(),
                       " bytes, its layout needs ", page.layout.PageBytes()));
    }
    if (PageChecksum(page.bytes.data(), page.bytes.size()) != page.checksum) {
      return absl::DataLossError(
          absl::StrCat("checksum mismatch for page ", page.key.DebugString()));
    }
    if (!seen.insert(page.key).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("key ", page.key.DebugString(), " twice in one batch"));
    }
  }
  for (const StoredPage& page : pages) {
    pages_.try_emplace(page.key, page);
    lost_.erase(page.key);
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<FetchedPage>> InProcessPageStore::Get(
    absl::Span<const PageKey> keys) {
  absl::MutexLock lock(&mu_);
  CallScope scope(&active_calls_);
  if (absl::Status s = EnterCall(); !s.ok()) return s;
  ++get_calls_;
  if (keys.empty()) return absl::InvalidArgumentError("empty get batch");
  std::vector<FetchedPage> out(keys.size());
  for (size_t i = 0; i < keys.size(); ++i) {
    out[i].key = keys[i];
    if (lost_.erase(keys[i]) > 0) {
      pages_.erase(keys[i]);
      out[i].status = FetchStatus::kLost;
      continue;
    }
    auto it = pages_.find(keys[i]);
    if (it == pages_.end()) {
      out[i].status = FetchStatus::kNotFound;
      continue;
    }
    out[i].status = FetchStatus::kOk;
    out[i].layout = it->second.layout;
    out[i].checksum = it->second.checksum;
    out[i].bytes = it->second.bytes;
  }
  return out;
}

namespace {
constexpr size_t kPinIdBytes = 16;

// INVALID_ARGUMENT unless `pin_id` is empty or 16 bytes, as a real store.
absl::Status CheckPinIdLength(std::string_view pin_id) {
  if (pin_id.empty() || pin_id.size() == kPinIdBytes) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat("pin_id must be empty or ", kPinIdBytes, " bytes, got ", pin_id.size()));
}

absl::Status UnknownPin(const std::string& pin_id) {
  return absl::NotFoundError(absl::StrCat("unknown pin ", absl::BytesToHexString(pin_id)));
}
}  // namespace

absl::StatusOr<std::string> InProcessPageStore::Pin(absl::Span<const PageKey> keys,
                                                    uint64_t ttl_ms, std::string_view pin_id) {
  absl::MutexLock lock(&mu_);
  CallScope scope(&active_calls_);
  if (absl::Status s = EnterCall(); !s.ok()) return s;
  ++pin_calls_;
  if (ttl_ms == 0) return absl::InvalidArgumentError("pin ttl_ms must be positive");
  if (absl::Status s = CheckPinIdLength(pin_id); !s.ok()) return s;
  for (const PageKey& key : keys) {
    if (!pages_.contains(key)) {
      return absl::NotFoundError(absl::StrCat("cannot pin missing page ", key.DebugString()));
    }
  }
  std::string id(pin_id);
  if (!id.empty() && !pins_.contains(id)) return UnknownPin(id);
  if (id.empty()) {
    id.assign(kPinIdBytes, '\0');
    const uint64_t n = ++pins_created_;
    for (int i = 0; i < 8; ++i) id[kPinIdBytes - 1 - i] = static_cast<char>(n >> (8 * i));
  }
  // TTLs are not enforced here: a pin lives until Unpin, the strictest case
  // for tests that check every pin is released.
  std::vector<PageKey>& pinned = pins_[id];
  pinned.insert(pinned.end(), keys.begin(), keys.end());
  return id;
}

absl::Status InProcessPageStore::Unpin(std::string_view pin_id) {
  absl::MutexLock lock(&mu_);
  CallScope scope(&active_calls_);
  if (absl::Status s = EnterCall(); !s.ok()) return s;
  if (absl::Status s = CheckPinIdLength(pin_id); !s.ok()) return s;
  const std::string id(pin_id);
  if (pins_.erase(id) == 0) return UnknownPin(id);
  return absl::OkStatus();
}

void InProcessPageStore::SetMode(Mode mode) {
  absl::MutexLock lock(&mu_);
  mode_ = mode;
}

void InProcessPageStore::SetLatencyMicros(int64_t latency_us) {
  absl::MutexLock lock(&mu_);
  latency_us_ = latency_us;
}

absl::Status InProcessPageStore::MarkLost(const PageKey& key) {
  absl::MutexLock lock(&mu_);
  if (!pages_.contains(key)) {
    return absl::NotFoundError(absl::StrCat("page ", key.DebugString(), " is not stored"));
  }
  lost_.insert(key);
  return absl::OkStatus();
}

absl::Status InProcessPageStore::Corrupt(const PageKey& key, std::string bytes) {
  absl::MutexLock lock(&mu_);
  auto it = pages_.find(key);
  if (it == pages_.end()) {
    return absl::NotFoundError(absl::StrCat("page ", key.DebugString(), " is not stored"));
  }
  it->second.bytes = std::move(bytes);
  return absl::OkStatus();
}

absl::Status InProcessPageStore::SetLayout(const PageKey& key, const PageLayout& layout) {
  absl::MutexLock lock(&mu_);
  auto it = pages_.find(key);
  if (it == pages_.end()) {
    return absl::NotFoundError(absl::StrCat("page ", key.DebugString(), " is not stored"));
  }
  it->second.layout = layout;
  return absl::OkStatus();
}

absl::StatusOr<uint32_t> InProcessPageStore::LookupPrefix(absl::Span<const Hash128> chain,
                                                          uint32_t n_layers) {
  absl::MutexLock lock(&mu_);
  CallScope scope(&active_calls_);
  if (absl::Status s = EnterCall(); !s.ok()) return s;
  ++lookup_calls_;
  if (n_layers == 0) return absl::InvalidArgumentError("lookup of no layers");
  uint32_t pages = 0;
  for (const Hash128& h : chain) {
    for (uint32_t l = 0; l < n_layers; ++l) {
      if (!pages_.contains(PageKey{.hash = h, .layer = l})) return pages;
    }
    ++pages;
  }
  return pages;
}

uint64_t InProcessPageStore::lookup_calls() const {
  absl::MutexLock lock(&mu_);
  return lookup_calls_;
}

bool InProcessPageStore::Contains(const PageKey& key) const {
  absl::MutexLock lock(&mu_);
  return pages_.contains(key);
}

size_t InProcessPageStore::page_count() const {
  absl::MutexLock lock(&mu_);
  return pages_.size();
}

size_t InProcessPageStore::pinned_key_count() const {
  absl::MutexLock lock(&mu_);
  absl::flat_hash_set<PageKey> keys;
  for (const auto& [id, pinned] : pins_) keys.insert(pinned.begin(), pinned.end());
  return keys.size();
}

size_t InProcessPageStore::live_pin_count() const {
  absl::MutexLock lock(&mu_);
  return pins_.size();
}

uint64_t InProcessPageStore::put_calls() const {
  absl::MutexLock lock(&mu_);
  return put_calls_;
}

uint64_t InProcessPageStore::get_calls() const {
  absl::MutexLock lock(&mu_);
  return get_calls_;
}

uint64_t InProcessPageStore::pin_calls() const {
  absl::MutexLock lock(&mu_);
  return pin_calls_;
}

}  // namespace kvtier::worker
