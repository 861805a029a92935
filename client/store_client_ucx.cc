// StoreClient's UCX data-plane path (see store_client.h and
// kvstore/dataplane/DATA_PLANE.md).
#include <algorithm>
#include <chrono>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "client/store_client.h"
#include "common/checksum.h"
#include "common/log.h"
#include "common/status_macros.h"
#include "kvtier/v1/convert.h"
#include "kvtier/v1/data_plane.h"

namespace kvtier::client {
namespace {

// Errors after which the session is replaced: the server lost it (NOT_FOUND:
// restart, timeout, eviction), or the transport failed.
bool DataPlaneFailure(const absl::Status& s) {
  return s.code() == absl::StatusCode::kNotFound || s.code() == absl::StatusCode::kUnavailable ||
         s.code() == absl::StatusCode::kDeadlineExceeded;
}

// Progresses until `receive` is done; UNAVAILABLE unless exactly `bytes`
// arrived, DEADLINE_EXCEEDED past `deadline`.
absl::Status AwaitReceive(ucx::UcxTagReceive& receive, uint64_t bytes, absl::Time deadline,
                          ucx::UcxWorker* worker) {
  while (!receive.done()) {
    if (worker->Progress() == 0 && absl::Now() > deadline) {
      return absl::DeadlineExceededError("tagged get: a page did not arrive in time");
    }
  }
  if (!receive.status().ok() || receive.length() != bytes) {
    return absl::UnavailableError(absl::StrFormat("tagged get: %s, %d of %d bytes",
                                                  receive.status().ToString(), receive.length(),
                                                  bytes));
  }
  return absl::OkStatus();
}


}  // namespace

absl::StatusOr<bool> StoreClient::TakePageHeader(int i, const PageKey& key, bool elsewhere,
                                                v1::GotPage& wire, GotPage* page) {
  page->key = key;
  page->status = wire.status();
  if (page->status != v1::PAGE_STATUS_OK) return true;
  ASSIGN_OR_RETURN(page->layout,
                   v1::LayoutFromProto(wire.layout(), absl::StrCat("pages[", i, "].layout")));
  page->checksum = wire.checksum();
  page->tier = wire.tier();
  if (elsewhere) return false;
  page->data = std::move(*wire.mutable_inline_data());
  return true;
}

uint64_t StoreClient::TakePageBytes(size_t i, const uint8_t* src, size_t size,
                                    Destinations destinations, GotPage* page) {
  page->data.clear();
  page->in_destination = i < destinations.size() && destinations[i].bytes() == size;
  return page->in_destination ? ScatterAndHashCopy(destinations[i].pieces, src, size)
                              : AppendWithChecksum(&page->data, src, size);
}

StoreClient::~StoreClient() {
  // The session is the plane's: the last client using it closes it.
  if (data_plane_ == nullptr || data_plane_.use_count() > 1) return;
  if (std::shared_ptr<const Connection> c = data_plane_->connection(); c != nullptr) {
    // Best effort, one attempt: the server also drops idle sessions.
    v1::CloseDataPlaneRequest request;
    request.set_session_id(c->session_id.Bytes());
    v1::CloseDataPlaneResponse response;
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(1000));
    (void)stub_->CloseDataPlane(&context, request, &response);  // result irrelevant at exit
  }
}

DataPlaneStats StoreClient::data_plane_stats() const {
  return DataPlaneStats{.sessions_opened = counters_.sessions_opened.load(),
                        .ucx_put_pages = counters_.ucx_put_pages.load(),
                        .ucx_get_pages = counters_.ucx_get_pages.load(),
                        .inline_put_pages = counters_.inline_put_pages.load(),
                        .inline_get_pages = counters_.inline_get_pages.load(),
                        .mapped_put_pages = counters_.mapped_put_pages.load(),
                        .mapped_get_pages = counters_.mapped_get_pages.load(),
                        .mapped_get_retries = counters_.mapped_get_retries.load(),
                        .message_gets = counters_.message_gets.load(),
                        .message_puts = counters_.message_puts.load(),
                        .lanes_opened = lanes_ != nullptr ? lanes_->lanes_opened() : 0,
                        .lane_put_pages = counters_.lane_put_pages.load(),
                        .lane_get_pages = counters_.lane_get_pages.load(),
                        .lane_direct_put_pages = counters_.lane_direct_put_pages.load(),
                        .lane_direct_get_pages = counters_.lane_direct_get_pages.load(),
                        .lane_direct_get_retries = counters_.lane_direct_get_retries.load()};
}

std::shared_ptr<const StoreClient::Connection> StoreClient::DataPlaneConnection() {
  if (data_plane_ == nullptr) return nullptr;
  if (auto c = data_plane_->connection(); c != nullptr) return c;
  absl::MutexLock lock(&open_mu_);
  if (absl::Now() < next_open_) return nullptr;
  bool opened = false;
  absl::StatusOr<std::shared_ptr<const Connection>> connection = data_plane_->ConnectOnce(
      [&]() -> absl::StatusOr<v1::OpenDataPlaneResponse> {
        v1::OpenDataPlaneRequest request;
        request.set_client_worker_address(data_plane_->worker_address());
        v1::OpenDataPlaneResponse response;
        RETURN_IF_ERROR(Call(&v1::KvStore::Stub::OpenDataPlane, request, &response));
        return response;
      },
      &opened);
  if (!connection.ok()) {
    KVTIER_LOG(INFO) << "data plane not opened, page bytes travel inline: "
                     << connection.status();
    constexpr int kMaxBackoffDoublings = 6;
    next_open_ = absl::Now() + absl::Milliseconds(options_.ucx_reopen_interval_ms)
                                   * (int64_t{1} << std::min(open_failures_, kMaxBackoffDoublings));
    ++open_failures_;
    return nullptr;
  }
  open_failures_ = 0;
  if (opened) ++counters_.sessions_opened;
  return *connection;
}

std::shared_ptr<const StoreClient::Connection> StoreClient::ReplaceConnection(
    const std::shared_ptr<const Connection>& connection) {
  data_plane_->Detach(connection);
  return DataPlaneConnection();
}

// Rounds of a data-plane put whose commit the server aborted.
constexpr int kMaxAbortedPutRounds = 4;

absl::Status StoreClient::PutChunk(absl::Span<const PutPage> pages, std::vector<PutOutcome>* out) {
  // Two tries through lanes (a lane that failed is dropped, so the second
  // is a fresh one unless another is idle), then the other paths.
  for (int attempt = 0; attempt < 2; ++attempt) {
    LanePool::Lease lane = LocalLaneLease();
    if (!lane) break;
    const size_t before = out->size();
    absl::Status status = PutChunkLane(*lane, pages, out);
    if (status.ok() || !(lane->broken() || absl::IsUnavailable(status))) return status;
    out->resize(before);
    KVTIER_LOG(INFO) << "local lane put failed: " << status;
  }
  std::shared_ptr<const Connection> connection = DataPlaneConnection();
  if (connection != nullptr && AutoInline(*connection)) return PutChunkInline(pages, out);
  // Two tries over the data plane (the second on a fresh session), then inline.
  for (int attempt = 0; attempt < 2 && connection != nullptr; ++attempt) {
    const size_t before = out->size();
    absl::Status status = PutChunkUcx(*connection, pages, out);
    // ABORTED: a page the server found stored at reserve time was removed
    // before the commit, which stored nothing; the next round writes it.
    for (int round = 1; round < kMaxAbortedPutRounds && absl::IsAborted(status); ++round) {
      out->resize(before);
      status = PutChunkUcx(*connection, pages, out);
    }
    if (!DataPlaneFailure(status)) return status;
    out->resize(before);
    KVTIER_LOG(INFO) << "data-plane put failed, reconnecting: " << status;
    connection = ReplaceConnection(connection);
  }
  return PutChunkInline(pages, out);
}

absl::Status StoreClient::PutChunkUcx(const Connection& connection,
                                      absl::Span<const PutPage> pages,
                                      std::vector<PutOutcome>* out) {
  for (const PutPage& page : pages) {
    if (page.data.size() != page.layout.PageBytes()) {
      // The server names the mismatch; it needs the inline bytes to see it.
      return PutChunkInline(pages, out);
    }
  }
  uint64_t bytes = 0;
  for (const PutPage& page : pages) bytes += page.data.size();
  switch (ResolvePutMode(connection, pages.size(), bytes)) {
    case UcxPutMode::kAuto:
    case UcxPutMode::kServerReads:
      return PutChunkUcxStaged(connection, pages, out);
    case UcxPutMode::kClientWrites:
      return PutChunkUcxWrite(connection, /*tagged=*/false, pages, out);
    case UcxPutMode::kTagged:
      return PutChunkUcxWrite(connection, /*tagged=*/true, pages, out);
  }
  return absl::InternalError("unknown ucx_put_mode");
}

UcxPutMode StoreClient::ResolvePutMode(const Connection& connection, size_t chunk_pages,
                                       uint64_t chunk_bytes) const {
  if (options_.ucx_put_mode != UcxPutMode::kAuto) return options_.ucx_put_mode;
  return connection.arena_mapped != nullptr &&
                 (PutByMessage(chunk_pages, chunk_bytes) || chunk_bytes >= kDirectCopyMinBytes)
             ? UcxPutMode::kClientWrites
             : UcxPutMode::kServerReads;
}

bool StoreClient::AutoInline(const Connection& connection) const {
  return options_.ucx_put_mode == UcxPutMode::kAuto && connection.am_transport == "tcp";
}

absl::Status StoreClient::PutChunkUcxStaged(const Connection& connection,
                                            absl::Span<const PutPage> pages,
                                            std::vector<PutOutcome>* out) {
  constexpr uint64_t kAlign = 64;
  v1::BatchPutRequest request;
  std::vector<uint64_t> offsets;
  uint64_t bytes = 0;
  for (const PutPage& page : pages) {
    offsets.push_back(bytes);
    bytes += (page.data.size() + kAlign - 1) / kAlign * kAlign;
  }
  ASSIGN_OR_RETURN(ClientDataPlane::RegionLease region, data_plane_->LeaseRegion(bytes));
  for (size_t i = 0; i < pages.size(); ++i) {
    const PutPage& page = pages[i];
    v1::PutPage* wire = request.add_pages();
    SetKeyAndLayout(page, wire);
    wire->set_checksum(CopyWithChecksum(region.memory().address() + offsets[i], page.data.data(),
                                        page.data.size()));
    wire->set_region_offset(offsets[i]);
  }
  v1::DataPlaneRegion* wire_region = request.mutable_region();
  wire_region->set_session_id(connection.session_id.Bytes());
  wire_region->set_address(reinterpret_cast<uint64_t>(region.memory().address()));
  wire_region->set_bytes(region.memory().bytes());
  wire_region->set_rkey(region.memory().packed_rkey());
  v1::BatchPutResponse response;
  RETURN_IF_ERROR(Call(&v1::KvStore::Stub::BatchPut, request, &response));
  RETURN_IF_ERROR(AppendPutOutcomes("BatchPut", response, pages.size(), out));
  counters_.ucx_put_pages += pages.size();
  return absl::OkStatus();
}

absl::Status StoreClient::AbortTransfer(const Connection& connection, uint64_t transfer_id,
                                        absl::Status status) {
  v1::AbortPutRequest request;
  request.set_session_id(connection.session_id.Bytes());
  request.set_transfer_id(transfer_id);
  v1::AbortPutResponse response;
  // The server also aborts it at its transfer timeout.
  if (absl::Status a = Call(&v1::KvStore::Stub::AbortPut, request, &response); !a.ok()) {
    status.SetPayload("kvtier.abort", absl::Cord(a.ToString()));
  }
  return status;
}

absl::Status StoreClient::PutChunkUcxWrite(const Connection& connection, bool tagged,
                                           absl::Span<const PutPage> pages,
                                           std::vector<PutOutcome>* out) {
  // Into a mapped arena, each page is hashed as it is copied, and the
  // checksums travel with CommitPut instead.
  const bool copy = !tagged && connection.arena_mapped != nullptr;
  if (!tagged && connection.arena_rkey == nullptr) {
    return absl::FailedPreconditionError(
        "ucx_put_mode client_writes: the server gives clients no access to its arena "
        "(trusted_local_clients is off); use server_reads or tagged");
  }
  v1::ReservePutRequest request;
  request.set_session_id(connection.session_id.Bytes());
  request.set_tagged(tagged);
  for (const PutPage& page : pages) {
    v1::PutPage* wire = request.add_pages();
    SetKeyAndLayout(page, wire);
    if (!copy) wire->set_checksum(PageChecksum(page.data.data(), page.data.size()));
  }
  // A put copied into the mapped arena waits on nothing at the server:
  // small ones go as messages, saving two gRPC round trips.
  uint64_t bytes = 0;
  for (const PutPage& page : pages) bytes += page.data.size();
  const bool by_message = copy && PutByMessage(pages.size(), bytes);
  v1::ReservePutResponse reserved;
  RETURN_IF_ERROR(by_message ? CallPutMessage(connection, wire::kReservePutOp,
                                              &v1::KvStore::Stub::ReservePut, request, &reserved)
                             : Call(&v1::KvStore::Stub::ReservePut, request, &reserved));
  auto abort = [&](absl::Status status) {
    return AbortTransfer(connection, reserved.transfer_id(), std::move(status));
  };
  if (reserved.slots_size() != static_cast<int>(pages.size())) {
    return abort(absl::InternalError(absl::StrFormat("ReservePut: %d slots for %d pages",
                                                     reserved.slots_size(), pages.size())));
  }
  v1::CommitPutRequest commit;
  commit.set_session_id(connection.session_id.Bytes());
  commit.set_transfer_id(reserved.transfer_id());
  // Zero stays for pages already present: their checksums are not checked.
  if (copy) commit.mutable_checksums()->Resize(static_cast<int>(pages.size()), 0);
  std::vector<ucx::WriteSegment> segments;
  std::vector<ucx::SendSegment> sends;
  segments.reserve(pages.size());
  for (size_t i = 0; i < pages.size(); ++i) {
    const v1::PutSlot& slot = reserved.slots(static_cast<int>(i));
    if (slot.already_present()) continue;
    if (tagged) {
      // The server posted the receive for page i into the slot.
      sends.push_back({.local = pages[i].data.data(), .bytes = pages[i].data.size(),
                       .tag = wire::PageTag(reserved.transfer_id(), static_cast<uint32_t>(i))});
      continue;
    }
    if (slot.arena_offset() > connection.arena_bytes ||
        pages[i].data.size() > connection.arena_bytes - slot.arena_offset()) {
      return abort(absl::InternalError(
          absl::StrFormat("ReservePut: slot %d at offset %d outside the arena", i,
                          slot.arena_offset())));
    }
    if (copy) {
      commit.set_checksums(static_cast<int>(i),
                           CopyWithChecksum(connection.arena_mapped + slot.arena_offset(),
                                            pages[i].data.data(), pages[i].data.size()));
      continue;
    }
    segments.push_back({.local = pages[i].data.data(), .bytes = pages[i].data.size(),
                        .remote_address = connection.arena_address + slot.arena_offset()});
  }
  const absl::Time deadline = absl::Now() + absl::Milliseconds(options_.deadline_ms);
  if (absl::Status s = copy     ? absl::OkStatus()
                       : tagged ? connection.endpoint->Send(sends, options_.ucx_window, deadline)
                                : connection.endpoint->Write(segments, *connection.arena_rkey,
                                                             options_.ucx_window, deadline);
      !s.ok()) {
    return abort(absl::UnavailableError(absl::StrCat("data-plane write: ", s.message())));
  }
  v1::BatchPutResponse response;
  RETURN_IF_ERROR(by_message ? CallPutMessage(connection, wire::kCommitPutOp,
                                              &v1::KvStore::Stub::CommitPut, commit, &response)
                             : Call(&v1::KvStore::Stub::CommitPut, commit, &response));
  RETURN_IF_ERROR(AppendPutOutcomes("CommitPut", response, pages.size(), out));
  counters_.ucx_put_pages += pages.size();
  if (copy) counters_.mapped_put_pages += pages.size();
  return absl::OkStatus();
}

template <typename Request, typename Response>
absl::Status StoreClient::CallPutMessage(const Connection& connection, uint32_t op,
                                         Method<Request, Response> method,
                                         const Request& request, Response* response) {
  const absl::Time deadline =
      absl::Now() + std::min(absl::Milliseconds(options_.deadline_ms), kMessageReplyTimeout);
  absl::StatusOr<std::string> reply =
      data_plane_->Call(connection, op, request.SerializeAsString(), deadline);
  if (reply.ok()) {
    if (!response->ParseFromString(*reply)) {
      return absl::InternalError(
          absl::StrCat("malformed reply to a request message: not a ", response->GetTypeName()));
    }
    if (op == wire::kCommitPutOp) ++counters_.message_puts;
    return absl::OkStatus();
  }
  const absl::StatusCode code = reply.status().code();
  if (code != absl::StatusCode::kUnimplemented && code != absl::StatusCode::kFailedPrecondition) {
    return reply.status();
  }
  return Call(method, request, response);
}

absl::Status StoreClient::GetChunkAny(absl::Span<const PageKey> keys, uint64_t page_bytes_hint,
                                      Destinations destinations, std::vector<GotPage>* out) {
  for (int attempt = 0; attempt < 2; ++attempt) {  // as PutChunk
    LanePool::Lease lane = LocalLaneLease();
    if (!lane) break;
    const size_t before = out->size();
    absl::Status status = GetChunkLane(*lane, keys, destinations, out);
    if (status.ok() || !(lane->broken() || absl::IsUnavailable(status))) return status;
    out->resize(before);
    KVTIER_LOG(INFO) << "local lane get failed: " << status;
  }
  std::shared_ptr<const Connection> connection = DataPlaneConnection();
  if (connection != nullptr && AutoInline(*connection)) return GetChunk(keys, out);
  for (int attempt = 0; attempt < 2 && connection != nullptr; ++attempt) {
    const size_t before = out->size();
    absl::Status status = GetChunkUcx(*connection, keys, page_bytes_hint, destinations, out);
    if (!DataPlaneFailure(status)) {
      if (status.code() != absl::StatusCode::kResourceExhausted) return status;
      out->resize(before);
      break;  // the inline part outgrew the message: GetChunk splits
    }
    out->resize(before);
    KVTIER_LOG(INFO) << "data-plane get failed, reconnecting: " << status;
    connection = ReplaceConnection(connection);
  }
  return GetChunk(keys, out);
}

absl::Status StoreClient::GetChunkUcx(const Connection& connection,
                                      absl::Span<const PageKey> keys, uint64_t page_bytes_hint,
                                      Destinations destinations, std::vector<GotPage>* out) {
  if (connection.arena_mapped != nullptr && (options_.ucx_put_mode == UcxPutMode::kAuto ||
                                             options_.ucx_put_mode == UcxPutMode::kClientWrites)) {
    return GetChunkMapped(connection, keys, destinations, out);
  }
  constexpr uint64_t kAlign = 64;
  const uint64_t region_bytes =
      page_bytes_hint > 0
          ? std::min<uint64_t>(keys.size() * ((page_bytes_hint + kAlign - 1) / kAlign * kAlign),
                               uint64_t{2} << 30)
          : options_.ucx_region_bytes;
  ASSIGN_OR_RETURN(ClientDataPlane::RegionLease region, data_plane_->LeaseRegion(region_bytes));
  uint64_t tag = 0;
  uint64_t slot = 0;
  if (options_.ucx_put_mode == UcxPutMode::kTagged) {
    slot = region.memory().bytes() / keys.size() / kAlign * kAlign;
    if (slot > 0) tag = data_plane_->NewTagBase();
  }
  // Declared after the region: destroyed (all done) before it returns.
  std::vector<std::unique_ptr<ucx::UcxTagReceive>> receives;
  absl::Status status;
  for (size_t i = 0; tag != 0 && i < keys.size() && status.ok(); ++i) {
    absl::StatusOr<std::unique_ptr<ucx::UcxTagReceive>> receive =
        ucx::UcxTagReceive::Post(data_plane_->worker(), region.memory().address() + i * slot,
                                 slot, wire::PageTag(tag, static_cast<uint32_t>(i)),
                                 /*exact=*/false);
    if (receive.ok()) receives.push_back(*std::move(receive));
    status = receive.status();
  }
  if (status.ok()) {
    status = GetChunkUcxInto(connection, keys, region.memory(), tag, slot, receives, out);
  }
  // Receives not waited for (pages that came inline or failed) are
  // cancelled; one UCX still holds keeps the region out of the pool.
  bool busy = false;
  for (auto& receive : receives) {
    receive->Cancel();
    busy = !receive->done() || busy;
  }
  if (busy) data_plane_->Park(std::move(region), std::move(receives));
  return status;
}

absl::Status StoreClient::CallBatchGet(const v1::BatchGetRequest& request,
                                       v1::BatchGetResponse* response) {
  RETURN_IF_ERROR(Call(&v1::KvStore::Stub::BatchGet, request, response));
  if (response->pages_size() != request.keys_size()) {
    return absl::InternalError(absl::StrFormat("BatchGet: %d pages for %d keys",
                                               response->pages_size(), request.keys_size()));
  }
  return absl::OkStatus();
}

absl::Status StoreClient::GetChunkMapped(const Connection& connection,
                                         absl::Span<const PageKey> keys,
                                         Destinations destinations, std::vector<GotPage>* out) {
  v1::BatchGetRequest request;
  for (const PageKey& key : keys) v1::KeyToProto(key, request.add_keys());
  request.set_arena_session_id(connection.session_id.Bytes());
  v1::BatchGetResponse response;
  RETURN_IF_ERROR(SendMappedGet(connection, request, &response));
  std::vector<GotPage> pages(keys.size());
  // Pages asked for again by RPC: bytes withheld from a message reply, and
  // copies that failed their checksum (counted apart).
  std::vector<PageKey> again;
  std::vector<size_t> again_at;
  uint64_t mapped = 0;
  uint64_t stale = 0;
  for (int i = 0; i < response.pages_size(); ++i) {
    v1::GotPage& wire = *response.mutable_pages(i);
    GotPage& page = pages[i];
    ASSIGN_OR_RETURN(const bool complete,
                     TakePageHeader(i, keys[i], wire.in_arena() || wire.bytes_withheld(), wire,
                                    &page));
    if (complete) continue;
    if (!wire.in_arena()) {
      again.push_back(keys[i]);
      again_at.push_back(i);
      continue;
    }
    const uint64_t size = page.layout.PageBytes();
    if (wire.arena_offset() > connection.arena_bytes ||
        size > connection.arena_bytes - wire.arena_offset()) {
      return absl::InternalError(absl::StrFormat("pages[%d]: arena offset %d outside the arena",
                                                 i, wire.arena_offset()));
    }
    // The arena slot may be reused under the copy: hash what was copied.
    if (TakePageBytes(i, connection.arena_mapped + wire.arena_offset(), size, destinations,
                      &page) != page.checksum) {
      again.push_back(keys[i]);
      again_at.push_back(i);
      ++stale;
      continue;
    }
    ++mapped;
  }
  if (!again.empty()) {
    std::vector<GotPage> fetched;
    RETURN_IF_ERROR(GetChunk(again, &fetched));
    for (size_t j = 0; j < again_at.size(); ++j) pages[again_at[j]] = std::move(fetched[j]);
  }
  for (GotPage& page : pages) out->push_back(std::move(page));
  counters_.ucx_get_pages += keys.size() - again.size();
  counters_.mapped_get_pages += mapped;
  counters_.mapped_get_retries += stale;
  return absl::OkStatus();
}

absl::Status StoreClient::SendMappedGet(const Connection& connection,
                                       const v1::BatchGetRequest& request,
                                       v1::BatchGetResponse* response) {
  if (request.keys_size() <= static_cast<int>(kMessageMaxKeys)) {
    // A mapped get takes the server microseconds: a missing reply means a
    // dead server (shared memory cannot tell), so the wait is short.
    const absl::Time deadline =
        absl::Now() + std::min(absl::Milliseconds(options_.deadline_ms), kMessageReplyTimeout);
    absl::StatusOr<std::string> reply =
        data_plane_->Call(connection, wire::kMappedGetOp, request.SerializeAsString(), deadline);
    if (reply.ok()) {
      if (!response->ParseFromString(*reply) || response->pages_size() != request.keys_size()) {
        return absl::InternalError("malformed reply to a get message");
      }
      ++counters_.message_gets;
      return absl::OkStatus();
    }
    // A lost session or a silent server: the caller reconnects. Anything
    // else (a server without the message path, a refusal) goes by RPC,
    // which gives the same answer or the same error.
    if (DataPlaneFailure(reply.status())) return reply.status();
  }
  return CallBatchGet(request, response);
}

absl::Status StoreClient::GetChunkUcxInto(
    const Connection& connection, absl::Span<const PageKey> keys, const ucx::UcxMemory& region,
    uint64_t tag, uint64_t slot_bytes,
    absl::Span<const std::unique_ptr<ucx::UcxTagReceive>> receives, std::vector<GotPage>* out) {
  const absl::Time deadline = absl::Now() + absl::Milliseconds(options_.deadline_ms);
  v1::BatchGetRequest request;
  for (const PageKey& key : keys) v1::KeyToProto(key, request.add_keys());
  v1::DataPlaneRegion* wire_region = request.mutable_region();
  wire_region->set_session_id(connection.session_id.Bytes());
  wire_region->set_address(reinterpret_cast<uint64_t>(region.address()));
  wire_region->set_bytes(region.bytes());
  wire_region->set_rkey(region.packed_rkey());
  wire_region->set_tag(tag);
  wire_region->set_slot_bytes(slot_bytes);
  v1::BatchGetResponse response;
  RETURN_IF_ERROR(CallBatchGet(request, &response));
  std::vector<GotPage> pages(keys.size());
  for (int i = 0; i < response.pages_size(); ++i) {
    v1::GotPage& wire = *response.mutable_pages(i);
    GotPage& page = pages[i];
    ASSIGN_OR_RETURN(const bool complete, TakePageHeader(i, keys[i], wire.in_region(), wire, &page));
    if (complete) continue;
    const uint64_t size = page.layout.PageBytes();
    if (wire.region_offset() > region.bytes() || size > region.bytes() - wire.region_offset()) {
      return absl::InternalError(absl::StrFormat("pages[%d]: region offset %d outside the region",
                                                 i, wire.region_offset()));
    }
    if (tag != 0) {
      if (wire.region_offset() != i * slot_bytes) {
        return absl::InternalError(absl::StrFormat("pages[%d]: region offset %d is not its slot",
                                                   i, wire.region_offset()));
      }
      RETURN_IF_ERROR(AwaitReceive(*receives[i], size, deadline, data_plane_->worker()));
    }
    page.data.assign(reinterpret_cast<const char*>(region.address()) + wire.region_offset(),
                     size);
    // Bytes that crossed the data plane are checked here too, so a torn or
    // stale write is never returned as a page.
    if (PageChecksum(page.data.data(), page.data.size()) != page.checksum) {
      return absl::UnavailableError(
          absl::StrFormat("pages[%d]: data-plane bytes fail their checksum", i));
    }
  }
  for (GotPage& page : pages) out->push_back(std::move(page));
  counters_.ucx_get_pages += keys.size();
  return absl::OkStatus();
}

}  // namespace kvtier::client
