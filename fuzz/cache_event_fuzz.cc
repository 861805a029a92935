// A node's cache event stream as a client takes it (client/cache_event_view.h):
// a sequence of CacheEventBatch messages, each prefixed by its length
// (LE-u16), applied in order. A refused batch must change nothing; an
// accepted one must leave a consistent view.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>

#include "client/cache_event_view.h"
#include "kvtier/v1/store.pb.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace kvtier;
  client::NodePageView view;
  size_t at = 0;
  while (at + 2 <= size) {
    const size_t len = std::min<size_t>(data[at] | (size_t{data[at + 1]} << 8), size - at - 2);
    v1::CacheEventBatch batch;
    const bool parsed = batch.ParseFromArray(data + at + 2, static_cast<int>(len));
    at += 2 + len;
    if (!parsed) continue;
    const size_t pages = view.pages();
    const uint64_t epoch = view.epoch();
    const uint64_t next_seq = view.next_seq();
    const bool synced = view.synced();
    if (!view.Apply(batch).ok()) {
      if (view.pages() != pages || view.epoch() != epoch || view.next_seq() != next_seq ||
          view.synced() != synced) {
        __builtin_trap();
      }
      continue;
    }
    if (view.epoch() != batch.epoch() || view.next_seq() != batch.next_seq()) __builtin_trap();
    if (view.synced() && view.next_seq() == 0) __builtin_trap();
    const v1::WatchCacheEventsRequest resume = view.ResumeRequest(std::nullopt);
    if (view.synced() && resume.from_seq() != view.next_seq()) __builtin_trap();
  }
  return 0;
}
