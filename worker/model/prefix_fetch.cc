#include "worker/model/prefix_fetch.h"

#include <algorithm>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/checksum.h"
#include "common/page_destination.h"
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
    const PageLayout& layout, const PrefixFetchOptions& options, std::vector<PrefixRows> rows) {
  RETURN_IF_ERROR(options.Validate());
  if (queue == nullptr || n_layers == 0 || chain.empty()) {
    return absl::InvalidArgumentError("prefix fetch needs a queue, layers and pages");
  }
  RETURN_IF_ERROR(layout.Validate());
  if (layout.arrangement != Arrangement::kKThenV || IsQuantized(layout.dtype)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "prefix fetch of ", DTypeName(layout.dtype),
        " pages: only unquantized pages with K before V load into prompt rows"));
  }
  if (rows.size() != n_layers ||
      std::any_of(rows.begin(), rows.end(),
                  [](const PrefixRows& r) { return r.k == nullptr || r.v == nullptr; })) {
    return absl::InvalidArgumentError(
        absl::StrCat("prefix fetch of ", n_layers, " layers into rows for ", rows.size()));
  }
  std::unique_ptr<PrefixFetch> fetch(
      new PrefixFetch(queue, std::move(chain), n_layers, layout, options, std::move(rows)));
  RETURN_IF_ERROR(fetch->TopUp().status());
  return fetch;
}

PrefixFetch::PrefixFetch(worker::PageTransferQueue* queue, std::vector<Hash128> chain,
                         uint32_t n_layers, const PageLayout& layout,
                         const PrefixFetchOptions& options, std::vector<PrefixRows> rows)
    : queue_(queue),
      chain_(std::move(chain)),
      n_layers_(n_layers),
      layout_(layout),
      options_(options),
      rows_(std::move(rows)) {}

PrefixFetch::~PrefixFetch() {
  {
    absl::MutexLock lock(&shared_->mu);
    shared_->closed = true;
    shared_->mu.Await(absl::Condition(
        +[](int* writing) { return *writing == 0; }, &shared_->writing));
  }
  for (const Batch& b : in_flight_) queue_->Abandon(b.id);
}

namespace {

// The work of one batch on a queue thread: gets `keys` (pages `begin`..
// of one layer) and puts each page's K and V into `rows`, recording in
// `landed` which pages are there and hash to their checksum.
worker::TransferResult GetIntoRows(worker::PageStoreBackend* backend,
                                   absl::Span<const PageKey> keys, uint32_t begin,
                                   const PageLayout& layout, PrefixRows rows,
                                   std::vector<uint8_t>* landed) {
  const size_t page_bytes = layout.PageBytes();
  const size_t tensor = layout.ElementsPerTensor();
  const bool f32 = layout.dtype == DType::kF32;
  // An fp32 page is its K rows then its V rows: two pieces.
  std::vector<PageDestination> places;
  if (f32) {
    places.resize(keys.size());
    for (size_t i = 0; i < keys.size(); ++i) {
      const size_t at = (begin + i) * tensor;
      places[i].pieces = {
          absl::MakeSpan(reinterpret_cast<uint8_t*>(rows.k + at), tensor * sizeof(float)),
          absl::MakeSpan(reinterpret_cast<uint8_t*>(rows.v + at), tensor * sizeof(float))};
    }
  }
  absl::StatusOr<std::vector<worker::FetchedPage>> got = backend->GetInto(keys, places);
  if (!got.ok()) return worker::TransferResult{got.status(), {}};
  landed->assign(got->size(), 0);
  const auto type = static_cast<kernels::ScalarType>(layout.dtype);
  for (size_t i = 0; i < got->size() && i < keys.size(); ++i) {
    const worker::FetchedPage& page = (*got)[i];
    if (page.status != worker::FetchStatus::kOk) continue;
    // An fp32 page that fits and is intact is in its rows (GetInto lands
    // every such page, however it came).
    if (page.in_destination) {
      (*landed)[i] = 1;
      continue;
    }
    if (f32 || page.bytes.size() != page_bytes) continue;
    if (PageChecksum(page.bytes.data(), page_bytes) != page.checksum) continue;
    const auto* bytes = reinterpret_cast<const uint8_t*>(page.bytes.data());
    const size_t at = (begin + i) * tensor;
    for (size_t e = 0; e < tensor; ++e) {
      rows.k[at + e] = kernels::LoadAsFloat(bytes, type, e);
      rows.v[at + e] = kernels::LoadAsFloat(bytes, type, tensor + e);
    }
    (*landed)[i] = 1;
  }
  return worker::TransferResult{absl::OkStatus(), *std::move(got)};
}

}  // namespace

absl::StatusOr<bool> PrefixFetch::TopUp() {
  while (next_layer_ < n_layers_ &&
         pages_in_flight_ + options_.batch_pages <= options_.window_pages) {
    const uint32_t count = std::min<uint32_t>(options_.batch_pages, n_pages() - next_page_);
    std::vector<PageKey> keys;
    keys.reserve(count);
    for (uint32_t p = next_page_; p < next_page_ + count; ++p) {
      keys.push_back(PageKey{.hash = chain_[p], .layer = next_layer_});
    }
    auto landed = std::make_shared<std::vector<uint8_t>>();
    auto work = [keys = std::move(keys), shared = shared_, landed, begin = next_page_,
                 layout = layout_,
                 rows = rows_[next_layer_]](worker::PageStoreBackend* backend) {
      {
        absl::MutexLock lock(&shared->mu);
        if (shared->closed) {
          return worker::TransferResult{absl::CancelledError("prefix load given up"), {}};
        }
        ++shared->writing;
        if (shared->active++ == 0) shared->busy_since = absl::Now();
      }
      worker::TransferResult result = GetIntoRows(backend, keys, begin, layout, rows,
                                                  landed.get());
      absl::MutexLock lock(&shared->mu);
      if (--shared->active == 0) shared->busy += absl::Now() - shared->busy_since;
      --shared->writing;
      return result;
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
                               .landed = std::move(landed)});
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

absl::Status PrefixFetch::Check(const Batch& batch, const worker::TransferResult& result) {
  if (!result.status.ok()) {
    stats_.pages_missing += batch.count;
    return absl::Status(result.status.code(),
                        absl::StrCat("prefix load of layer ", batch.layer, " pages ", batch.begin,
                                     "..", batch.begin + batch.count - 1,
                                     " failed: ", result.status.message()));
  }
  if (result.pages.size() != batch.count || batch.landed->size() != batch.count) {
    stats_.pages_rejected += batch.count;
    return absl::DataLossError(absl::StrCat("store answered ", result.pages.size(),
                                            " pages for ", batch.count));
  }
  const size_t page_bytes = layout_.PageBytes();
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
    } else if (!page.in_destination && page.bytes.size() != page_bytes) {
      bad = "has the wrong size";
    } else if ((*batch.landed)[i] == 0) {
      bad = "does not match its checksum";
    }
    if (bad != nullptr) {
      ++stats_.pages_rejected;
      return absl::DataLossError(absl::StrCat(where, " ", bad, "; not served"));
    }
  }
  stats_.pages_loaded += batch.count;
  stats_.bytes_loaded += uint64_t{batch.count} * page_bytes;
  return absl::OkStatus();
}

absl::Status PrefixFetch::TakeLayer(uint32_t layer) {
  if (layer != next_take_ || layer >= n_layers_) {
    return absl::FailedPreconditionError(
        absl::StrCat("prefix layer ", layer, " taken out of order (next ", next_take_, ")"));
  }
  const absl::Time t0 = absl::Now();
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
    if (status.ok()) status = Check(batch, result);
  }
  ++next_take_;
  stats_.wait_s += absl::ToDoubleSeconds(absl::Now() - t0);
  RETURN_IF_ERROR(TopUp().status());
  return status;
}

PrefixFetchStats PrefixFetch::stats() const {
  PrefixFetchStats s = stats_;
  absl::MutexLock lock(&shared_->mu);
  s.busy_s = absl::ToDoubleSeconds(shared_->busy);
  return s;
}

}  // namespace kvtier::model
