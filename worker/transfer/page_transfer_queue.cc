#include "worker/transfer/page_transfer_queue.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace kvtier::worker {

absl::Status TransferQueueOptions::Validate() const {
  if (n_threads < 1 || n_threads > 64) {
    return absl::InvalidArgumentError(absl::StrCat("n_threads ", n_threads, " not in [1, 64]"));
  }
  if (max_inflight_transfers < 1) {
    return absl::InvalidArgumentError("max_inflight_transfers must be positive");
  }
  if (max_batch_pages < 1) return absl::InvalidArgumentError("max_batch_pages must be positive");
  if (max_inflight_pages < max_batch_pages) {
    return absl::InvalidArgumentError(absl::StrCat("max_inflight_pages ", max_inflight_pages,
                                                   " below max_batch_pages ", max_batch_pages));
  }
  return absl::OkStatus();
}

const char* TransferStateName(TransferState state) {
  switch (state) {
    case TransferState::kQueued: return "queued";
    case TransferState::kRunning: return "running";
    case TransferState::kDone: return "done";
    case TransferState::kExpired: return "expired";
  }
  return "unknown";
}

absl::StatusOr<std::unique_ptr<PageTransferQueue>> PageTransferQueue::Create(
    PageStoreBackend* backend, TransferQueueOptions options) {
  if (backend == nullptr) return absl::InvalidArgumentError("backend is null");
  if (absl::Status s = options.Validate(); !s.ok()) return s;
  return std::unique_ptr<PageTransferQueue>(new PageTransferQueue(backend, options));
}

PageTransferQueue::PageTransferQueue(PageStoreBackend* backend, TransferQueueOptions options)
    : backend_(backend), options_(options) {
  threads_.reserve(options_.n_threads);
  for (int i = 0; i < options_.n_threads; ++i) threads_.emplace_back([this] { ThreadMain(); });
}

PageTransferQueue::~PageTransferQueue() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  for (std::thread& t : threads_) t.join();
}

bool PageTransferQueue::HasWorkOrStop() const { return stopping_ || !queue_.empty(); }

void PageTransferQueue::ThreadMain() {
  absl::MutexLock lock(&mu_);
  while (true) {
    mu_.Await(absl::Condition(this, &PageTransferQueue::HasWorkOrStop));
    if (stopping_) return;
    const TransferId id = queue_.front();
    queue_.pop_front();
    Transfer* t = transfers_.at(id).get();
    if (absl::Now() >= t->deadline) {
      // Never start work nobody can wait for any more.
      if (t->state == TransferState::kQueued) {
        t->state = TransferState::kExpired;
        t->result.status = absl::DeadlineExceededError(
            absl::StrCat(t->what, " expired in the queue before it started"));
      }
      t->with_thread = false;
      if (t->released) EraseLocked(id);
      continue;
    }
    t->state = TransferState::kRunning;
    Work work = std::move(t->work);
    mu_.Unlock();
    TransferResult result = work(backend_);
    mu_.Lock();
    t = transfers_.at(id).get();
    if (t->state == TransferState::kRunning) {
      t->state = TransferState::kDone;
      t->result = std::move(result);
    }
    t->with_thread = false;
    if (t->released) EraseLocked(id);
  }
}

void PageTransferQueue::EraseLocked(TransferId id) {
  auto it = transfers_.find(id);
  inflight_pages_ -= it->second->n_pages;
  transfers_.erase(it);
}

absl::StatusOr<TransferId> PageTransferQueue::Submit(std::string what, int n_pages,
                                                     absl::Duration timeout, Work work) {
  if (n_pages < 0 || n_pages > options_.max_batch_pages) {
    return absl::InvalidArgumentError(absl::StrFormat("%s: batch of %d pages exceeds %d", what,
                                                      n_pages, options_.max_batch_pages));
  }
  if (timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": timeout must be positive"));
  }
  absl::MutexLock lock(&mu_);
  if (static_cast<int>(transfers_.size()) >= options_.max_inflight_transfers ||
      inflight_pages_ + n_pages > options_.max_inflight_pages) {
    return absl::ResourceExhaustedError(absl::StrFormat(
        "%s: transfer window full (%d transfers, %d pages in flight)", what,
        static_cast<int>(transfers_.size()), inflight_pages_));
  }
  const TransferId id = next_id_++;
  auto t = std::make_unique<Transfer>();
  t->what = std::move(what);
  t->n_pages = n_pages;
  t->deadline = absl::Now() + timeout;
  t->work = std::move(work);
  transfers_.emplace(id, std::move(t));
  inflight_pages_ += n_pages;
  queue_.push_back(id);
  return id;
}

absl::StatusOr<TransferId> PageTransferQueue::SubmitPut(std::vector<StoredPage> pages,
                                                        absl::Duration timeout) {
  const int n = static_cast<int>(pages.size());
  auto shared = std::make_shared<std::vector<StoredPage>>(std::move(pages));
  return Submit(absl::StrCat("put of ", n, " pages"), n, timeout,
                [shared](PageStoreBackend* b) { return TransferResult{b->Put(*shared), {}}; });
}

absl::StatusOr<TransferId> PageTransferQueue::SubmitGet(std::vector<PageKey> keys,
                                                        absl::Duration timeout) {
  const int n = static_cast<int>(keys.size());
  auto shared = std::make_shared<std::vector<PageKey>>(std::move(keys));
  return Submit(absl::StrCat("get of ", n, " pages"), n, timeout,
                [shared](PageStoreBackend* b) {
                  absl::StatusOr<std::vector<FetchedPage>> got = b->Get(*shared);
                  if (!got.ok()) return TransferResult{got.status(), {}};
                  return TransferResult{absl::OkStatus(), *std::move(got)};
                });
}

absl::StatusOr<TransferState> PageTransferQueue::State(TransferId id) const {
  absl::MutexLock lock(&mu_);
  auto it = transfers_.find(id);
  if (it == transfers_.end() || it->second->released) {
    return absl::NotFoundError(absl::StrCat("unknown transfer ", id));
  }
  return it->second->state;
}

TransferResult PageTransferQueue::Wait(TransferId id) {
  absl::MutexLock lock(&mu_);
  auto it = transfers_.find(id);
  if (it == transfers_.end() || it->second->released) {
    return TransferResult{absl::NotFoundError(absl::StrCat("unknown transfer ", id)), {}};
  }
  Transfer* t = it->second.get();
  auto finished = [t]() {
    return t->state == TransferState::kDone || t->state == TransferState::kExpired;
  };
  mu_.AwaitWithDeadline(absl::Condition(&finished), t->deadline);
  if (!finished()) {
    // The call may still return later; its result is dropped then.
    t->state = TransferState::kExpired;
    t->result.status = absl::DeadlineExceededError(
        absl::StrCat(t->what, " did not finish by its deadline; the store is unreachable or "
                              "overloaded"));
  }
  TransferResult result = std::move(t->result);
  t->released = true;
  // A queued or running call keeps its window place until a thread lets go.
  if (!t->with_thread) EraseLocked(id);
  return result;
}

void PageTransferQueue::Abandon(TransferId id) {
  absl::MutexLock lock(&mu_);
  auto it = transfers_.find(id);
  if (it == transfers_.end() || it->second->released) return;
  Transfer* t = it->second.get();
  t->released = true;
  if (t->state == TransferState::kQueued) {
    queue_.erase(std::find(queue_.begin(), queue_.end(), id));
    EraseLocked(id);
  } else if (!t->with_thread) {
    EraseLocked(id);
  }
}

int PageTransferQueue::inflight_transfers() const {
  absl::MutexLock lock(&mu_);
  return static_cast<int>(transfers_.size());
}

int PageTransferQueue::inflight_pages() const {
  absl::MutexLock lock(&mu_);
  return inflight_pages_;
}

}  // namespace kvtier::worker
