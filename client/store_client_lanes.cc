// StoreClient's local-lane path (client/local_lane.h,
// kvstore/dataplane/DATA_PLANE.md "Local lanes").
#include <algorithm>
#include <utility>
#include <vector>

#include "absl/strings/str_format.h"
#include "client/store_client.h"
#include "common/checksum.h"
#include "common/status_macros.h"
#include "kvtier/v1/convert.h"
#include "kvtier/v1/local_lane.h"

namespace kvtier::client {
namespace {

uint64_t AlignUp(uint64_t n) {
  return (n + wire::kLaneAlignBytes - 1) / wire::kLaneAlignBytes * wire::kLaneAlignBytes;
}

}  // namespace

absl::StatusOr<LocalLane::Grant> StoreClient::OpenLocalLane() {
  v1::OpenLocalLaneRequest request;
  v1::OpenLocalLaneResponse response;
  RETURN_IF_ERROR(Call(&v1::KvStore::Stub::OpenLocalLane, request, &response));
  return LocalLane::Grant{.socket_name = response.socket_name(),
                          .ticket = response.ticket(),
                          .server_proof = response.server_proof()};
}

LanePool::Lease StoreClient::LocalLaneLease() {
  if (lanes_ == nullptr || lanes_declined_.load(std::memory_order_relaxed)) return {};
  // A server that maps its arena into trusted clients serves them better
  // that way (one copy per get instead of two).
  if (data_plane_ != nullptr) {
    std::shared_ptr<const Connection> connection = data_plane_->connection();
    if (connection != nullptr && connection->arena_mapped != nullptr) {
      lanes_declined_ = true;
      return {};
    }
  }
  return lanes_->Acquire();
}

absl::Status StoreClient::CallLanePut(LocalLane& lane, const v1::BatchPutRequest& request,
                                      absl::Duration timeout, std::vector<PutOutcome>* out) {
  ASSIGN_OR_RETURN(const std::string reply, lane.Call(wire::kLanePutOp, request, timeout));
  v1::BatchPutResponse response;
  if (!response.ParseFromString(reply)) {
    return absl::UnavailableError("local lane: a put reply that does not parse");
  }
  const auto pages = static_cast<size_t>(request.pages_size());
  RETURN_IF_ERROR(AppendPutOutcomes("local lane put", response, pages, out));
  counters_.lane_put_pages += pages;
  return absl::OkStatus();
}

absl::Status StoreClient::PutChunkLane(LocalLane& lane, absl::Span<const PutPage> pages,
                                       std::vector<PutOutcome>* out) {
  for (const PutPage& page : pages) {
    if (page.data.size() != page.layout.PageBytes()) {
      // The server names the mismatch; it needs the inline bytes to see it.
      return PutChunkInline(pages, out);
    }
  }
  const absl::Duration timeout = absl::Milliseconds(options_.deadline_ms);
  if (lane.direct() && options_.local_direct_puts) {
    // The server reads each page where it lies, one copy into its store,
    // and verifies it there against the checksum computed here.
    v1::BatchPutRequest request;
    for (const PutPage& page : pages) {
      v1::PutPage* wire = request.add_pages();
      SetKeyAndLayout(page, wire);
      wire->set_checksum(PageChecksum(page.data.data(), page.data.size()));
      wire->set_client_address(reinterpret_cast<uintptr_t>(page.data.data()));
    }
    RETURN_IF_ERROR(CallLanePut(lane, request, timeout, out));
    counters_.lane_direct_put_pages += pages.size();
    return absl::OkStatus();
  }
  const absl::Span<uint8_t> segment = lane.segment();
  for (size_t begin = 0; begin < pages.size();) {
    v1::BatchPutRequest request;
    uint64_t cursor = 0;
    size_t end = begin;
    for (; end < pages.size(); ++end) {
      const PutPage& page = pages[end];
      const uint64_t offset = AlignUp(cursor);
      if (offset > segment.size() || page.data.size() > segment.size() - offset) break;
      v1::PutPage* wire = request.add_pages();
      SetKeyAndLayout(page, wire);
      wire->set_checksum(
          CopyWithChecksum(segment.data() + offset, page.data.data(), page.data.size()));
      wire->set_region_offset(offset);
      cursor = offset + page.data.size();
    }
    if (end == begin) {  // a page larger than the whole segment
      RETURN_IF_ERROR(PutChunkInline(pages.subspan(begin, 1), out));
      ++begin;
      continue;
    }
    RETURN_IF_ERROR(CallLanePut(lane, request, timeout, out));
    begin = end;
  }
  return absl::OkStatus();
}

absl::Status StoreClient::GetChunkLane(LocalLane& lane, absl::Span<const PageKey> keys,
                                       Destinations destinations, std::vector<GotPage>* out) {
  v1::BatchGetRequest request;
  for (const PageKey& key : keys) v1::KeyToProto(key, request.add_keys());
  std::vector<GotPage> pages(keys.size());
  // Direct: the server writes each page into the caller's destination.
  // Pages without one come through the segment: a fresh buffer would be
  // zeroed first, and that pass cost more than the copy direct saves.
  // Destinations split in pieces come through the segment too: the server
  // writes one buffer per page, and this process copies into the pieces.
  const bool direct =
      lane.direct() && !destinations.empty() &&
      std::all_of(destinations.begin(), destinations.end(),
                  [](const PageDestination& d) { return d.pieces.size() <= 1; });
  std::vector<absl::Span<uint8_t>> buffers;
  if (direct) {
    buffers.reserve(keys.size());
    for (size_t i = 0; i < keys.size(); ++i) {
      const absl::Span<uint8_t> buffer =
          destinations[i].pieces.empty() ? absl::Span<uint8_t>() : destinations[i].pieces[0];
      buffers.push_back(buffer);
      v1::ClientBuffer* wire = request.add_lane_destinations();
      wire->set_address(reinterpret_cast<uintptr_t>(buffer.data()));
      wire->set_bytes(buffer.size());
    }
  }
  ASSIGN_OR_RETURN(const std::string reply,
                   lane.Call(wire::kLaneGetOp, request, absl::Milliseconds(options_.deadline_ms)));
  v1::BatchGetResponse response;
  if (!response.ParseFromString(reply)) {
    return absl::UnavailableError("local lane: a get reply that does not parse");
  }
  if (response.pages_size() != static_cast<int>(keys.size())) {
    return absl::UnavailableError(absl::StrFormat("local lane: %d pages for %d keys",
                                                  response.pages_size(), keys.size()));
  }
  const absl::Span<const uint8_t> segment = lane.segment();
  // Withheld pages (their copy failed its checksum at the server) and
  // direct ones that fail it here are asked for again by RPC, whose
  // verifying read drops a corrupt page.
  std::vector<PageKey> again;
  std::vector<size_t> again_at;
  uint64_t direct_pages = 0;
  for (int i = 0; i < response.pages_size(); ++i) {
    v1::GotPage& wire = *response.mutable_pages(i);
    GotPage& page = pages[i];
    const bool elsewhere = wire.in_region() || wire.bytes_withheld() || wire.in_destination();
    ASSIGN_OR_RETURN(const bool complete, TakePageHeader(i, keys[i], elsewhere, wire, &page));
    if (complete) continue;
    const uint64_t size = page.layout.PageBytes();
    if (wire.in_destination()) {
      if (!direct || buffers[i].size() != size) {
        return absl::UnavailableError(absl::StrFormat(
            "local lane: pages[%d] reported in a destination it does not fit", i));
      }
      // The server copied without hashing: this is the check.
      if (PageChecksum(buffers[i].data(), size) != page.checksum) {
        page.data.clear();
        ++counters_.lane_direct_get_retries;
        again.push_back(keys[i]);
        again_at.push_back(i);
        continue;
      }
      page.in_destination = !destinations.empty();
      ++direct_pages;
      continue;
    }
    page.data.clear();
    if (!wire.in_region()) {
      again.push_back(keys[i]);
      again_at.push_back(i);
      continue;
    }
    if (wire.region_offset() > segment.size() || size > segment.size() - wire.region_offset()) {
      return absl::UnavailableError(absl::StrFormat(
          "local lane: pages[%d] at offset %d outside the segment", i, wire.region_offset()));
    }
    // Checked here too, so that bytes changed in the segment are never
    // returned as the page.
    if (TakePageBytes(i, segment.data() + wire.region_offset(), size, destinations, &page) !=
        page.checksum) {
      return absl::UnavailableError(
          absl::StrFormat("local lane: pages[%d] fails its checksum in the segment", i));
    }
  }
  if (!again.empty()) {
    std::vector<GotPage> fetched;
    RETURN_IF_ERROR(GetChunk(again, &fetched));
    for (size_t j = 0; j < again_at.size(); ++j) pages[again_at[j]] = std::move(fetched[j]);
  }
  for (GotPage& page : pages) out->push_back(std::move(page));
  counters_.lane_get_pages += keys.size() - again.size();
  counters_.lane_direct_get_pages += direct_pages;
  return absl::OkStatus();
}

}  // namespace kvtier::client
