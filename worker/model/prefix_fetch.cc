#include "worker/model/prefix_fetch.h"

#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/checksum.h"
#include "common/status_macros.h"
#include "kernels/dtype.h"

namespace kvtier::model {

absl::Status PrefixFetchOptions::Validate() const {
  if (batch_pages < 1 || window_pages < batch_pages || timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "prefix fetch: batch_pages=", batch_pages, " (>= 1), window_pages=", window_pages,
        " (>= batch_pages), timeout=", absl::FormatDuration(timeout), " (> 0)"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<PrefixFetch>> PrefixFetch::Start(
    worker::PageTransferQueue* queue, std::vector<Hash128> chain, uint32_t n_layers,
    const PageLayout& layout, const PrefixFetchOptions& options) {
  RETURN_IF_ERROR(options.Validate());
  if (queue == nullptr || n_layers == 0 || chain.empty()) {
    return absl::InvalidArgumentError("prefix fetch needs a queue, layers and pages");
  }
  std::unique_ptr<PrefixFetch> fetch(
      new PrefixFetch(queue, std::move(chain), n_layers, layout, options));
  RETURN_IF_ERROR(fetch->TopUp().status());
  return fetch;
}

PrefixFetch::PrefixFetch(worker::PageTransferQueue* queue, std::vector<Hash128> chain,
                         uint32_t n_layers, const PageLayout& layout,
                         const PrefixFetchOptions& options)
    : queue_(queue),
      chain_(std::move(chain)),
      n_layers_(n_layers),
      layout_(layout),
      options_(options) {}

PrefixFetch::~PrefixFetch() {
  for (const Batch& b : in_flight_) queue_->Abandon(b.id);
}

absl::StatusOr<bool> PrefixFetch::TopUp() {
  while (next_layer_ < n_layers_ &&
         pages_in_flight_ + options_.batch_pages <= options_.window_pages) {
    const uint32_t count = std::min<uint32_t>(options_.batch_pages, n_pages() - next_page_);
    std::vector<PageKey> keys;
    keys.reserve(count);
    for (uint32_t p = next_page_; p < next_page_ + count; ++p) {
      keys.push_back(PageKey{.hash = chain_[p], .layer = next_layer_});
    }
    std::shared_ptr<Clock> clock = clock_;
    auto checksum_ok = std::make_shared<std::vector<uint8_t>>();
    auto work = [keys = std::move(keys), clock,
                 checksum_ok](worker::PageStoreBackend* backend) {
      {
        absl::MutexLock lock(&clock->mu);
        if (clock->active++ == 0) clock->busy_since = absl::Now();
      }
      absl::StatusOr<std::vector<worker::FetchedPage>> got = backend->Get(keys);
      {
        absl::MutexLock lock(&clock->mu);
        if (--clock->active == 0) clock->busy += absl::Now() - clock->busy_since;
      }
      if (!got.ok()) return worker::TransferResult{got.status(), {}};
      checksum_ok->reserve(got->size());
      for (const worker::FetchedPage& page : *got) {
        checksum_ok->push_back(
            PageChecksum(page.bytes.data(), page.bytes.size()) == page.checksum ? 1 : 0);
      }
      return worker::TransferResult{absl::OkStatus(), *std::move(got)};
    };
    absl::StatusOr<worker::TransferId> id =
        queue_->Submit(absl::StrCat("prefix load of ", count, " pages of layer ", next_layer_),
                       static_cast<int>(count), options_.timeout, std::move(work));
    if (absl::IsResourceExhausted(id.status())) return false;
    if (!id.ok()) return id.status();
    in_flight_.push_back(Batch{.layer = next_layer_,
                               .begin = next_page_,
                               .count = count,
                               .id = *id,
                               .checksum_ok = std::move(checksum_ok)});
    pages_in_flight_ += count;
    ++stats_.batches;
    next_page_ += count;
    if (next_page_ == n_pages()) {
      next_page_ = 0;
      ++next_layer_;
    }
  }
  return true;
}

absl::Status PrefixFetch::CheckAndCopy(const Batch& batch, const worker::TransferResult& result,
                                       std::vector<float>* k, std::vector<float>* v) {
  if (!result.status.ok()) {
    stats_.pages_missing += batch.count;
    return absl::Status(result.status.code(),
                        absl::StrCat("prefix load of layer ", batch.layer, " pages ", batch.begin,
                                     "..", batch.begin + batch.count - 1,
                                     " failed: ", result.status.message()));
  }
  if (result.pages.size() != batch.count) {
    stats_.pages_rejected += batch.count;
    return absl::DataLossError(absl::StrCat("store answered ", result.pages.size(),
                                            " pages for ", batch.count));
  }
  const size_t page_bytes = layout_.PageBytes();
  const size_t row = size_t{layout_.n_kv_heads} * layout_.head_dim;
  const size_t tensor = size_t{layout_.page_size} * row;  // elements of K (or V)
  const auto type = static_cast<kernels::ScalarType>(layout_.dtype);
  for (uint32_t i = 0; i < batch.count; ++i) {
    const worker::FetchedPage& page = result.pages[i];
    const uint32_t p = batch.begin + i;
    const std::string where = absl::StrCat("page ", p, " of layer ", batch.layer);
    if (page.status != worker::FetchStatus::kOk) {
      ++stats_.pages_missing;
      return absl::NotFoundError(absl::StrCat(where, " is ", worker::FetchStatusName(page.status),
                                              " in the store"));
    }
    const PageKey want{.hash = chain_[p], .layer = batch.layer};
    const char* bad = nullptr;
    if (!(page.key.hash == want.hash && page.key.layer == want.layer)) {
      bad = "came back under another key";
    } else if (!(page.layout == layout_)) {
      bad = "has another layout";
    } else if (page.bytes.size() != page_bytes) {
      bad = "has the wrong size";
    } else if (batch.checksum_ok->size() != result.pages.size() ||
               (*batch.checksum_ok)[i] == 0) {
      bad = "does not match its checksum";
    }
    if (bad != nullptr) {
      ++stats_.pages_rejected;
      return absl::DataLossError(absl::StrCat(where, " ", bad, "; not served"));
    }
    const auto* bytes = reinterpret_cast<const uint8_t*>(page.bytes.data());
    if (layout_.dtype == DType::kF32) {
      // Appended as they are: no zero fill of several hundred MiB first.
      const auto* kf = reinterpret_cast<const float*>(bytes);
      k->insert(k->end(), kf, kf + tensor);
      v->insert(v->end(), kf + tensor, kf + 2 * tensor);
    } else {
      const size_t at = k->size();
      k->resize(at + tensor);
      v->resize(at + tensor);
      for (size_t e = 0; e < tensor; ++e) {
        (*k)[at + e] = kernels::LoadAsFloat(bytes, type, e);
        (*v)[at + e] = kernels::LoadAsFloat(bytes, type, tensor + e);
      }
    }
  }
  stats_.pages_loaded += batch.count;
  stats_.bytes_loaded += uint64_t{batch.count} * page_bytes;
  return absl::OkStatus();
}

absl::Status PrefixFetch::TakeLayer(uint32_t layer, std::vector<float>* k,
                                    std::vector<float>* v) {
  if (layer != next_take_ || layer >= n_layers_) {
    return absl::FailedPreconditionError(
        absl::StrCat("prefix layer ", layer, " taken out of order (next ", next_take_, ")"));
  }
  const absl::Time t0 = absl::Now();
  const size_t elements = size_t{n_pages()} * layout_.page_size * layout_.n_kv_heads *
                          layout_.head_dim;
  k->reserve(k->size() + elements);
  v->reserve(v->size() + elements);
  absl::Status status;
  uint32_t pages_taken = 0;
  while (pages_taken < n_pages()) {
    ASSIGN_OR_RETURN(bool room, TopUp());
    if (in_flight_.empty()) {
      // The queue is full of other transfers: wait for room.
      if (!room) std::this_thread::sleep_for(std::chrono::milliseconds(1));
      if (absl::Now() - t0 > options_.timeout) {
        return absl::DeadlineExceededError("prefix load found no room in the transfer queue");
      }
      continue;
    }
    const Batch batch = in_flight_.front();
    in_flight_.pop_front();
    pages_in_flight_ -= batch.count;
    const worker::TransferResult result = queue_->Wait(batch.id);
    pages_taken += batch.count;
    if (status.ok()) status = CheckAndCopy(batch, result, k, v);
  }
  ++next_take_;
  stats_.wait_s += absl::ToDoubleSeconds(absl::Now() - t0);
  RETURN_IF_ERROR(TopUp().status());
  return status;
}

PrefixFetchStats PrefixFetch::stats() const {
  PrefixFetchStats s = stats_;
  absl::MutexLock lock(&clock_->mu);
  s.busy_s = absl::ToDoubleSeconds(clock_->busy);
  return s;
}

}  // namespace kvtier::model
