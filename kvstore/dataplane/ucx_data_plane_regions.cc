// UcxDataPlane's transfers through a client's registered regions: gets
// written (RMA) or sent (tagged) into them, puts pulled from them within one
// RPC, and the remote keys of those regions, probed and cached per session.
#include <algorithm>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_format.h"
#include "common/status_macros.h"
#include "kvstore/dataplane/ucx_address_probe.h"
#include "kvstore/dataplane/ucx_data_plane.h"
#include "kvstore/dataplane/ucx_data_plane_session.h"

namespace kvtier::store {
namespace {

// Packed remote keys are a few hundred bytes.
constexpr size_t kMaxRkeyBytes = 16 << 10;

}  // namespace

absl::Status UcxDataPlane::CheckRegion(const SessionId& session_id, uint64_t owner,
                                       absl::string_view rkey) {
  if (rkey.empty() || rkey.size() > kMaxRkeyBytes) {
    return absl::InvalidArgumentError(
        absl::StrFormat("region.rkey: %d bytes, need 1..%d", rkey.size(), kMaxRkeyBytes));
  }
  return CheckSession(session_id, owner);
}

absl::Status UcxDataPlane::WriteToRegion(const SessionId& session_id, uint64_t address,
                                         absl::string_view rkey,
                                         absl::Span<const RegionWrite> pages,
                                         absl::Time deadline) {
  ASSIGN_OR_RETURN(const std::shared_ptr<Session> session, FindSession(session_id));
  ASSIGN_OR_RETURN(std::shared_ptr<ucx::UcxRemoteKey> key, SessionKey(*session, rkey));
  std::vector<ucx::WriteSegment> segments;
  segments.reserve(pages.size());
  for (const RegionWrite& p : pages) {
    segments.push_back({.local = p.bytes, .bytes = p.size,
                        .remote_address = address + p.region_offset});
  }
  absl::Status status = session->endpoint->Write(segments, *key, options_.window, deadline);
  if (!status.ok()) {
    key.reset();
    Close(session_id);
  }
  return status;
}

absl::Status UcxDataPlane::SendToClient(const SessionId& session_id,
                                        absl::Span<const ucx::SendSegment> pages,
                                        absl::Time deadline) {
  ASSIGN_OR_RETURN(const std::shared_ptr<Session> session, FindSession(session_id));
  absl::Status status = session->endpoint->Send(pages, options_.window, deadline);
  if (!status.ok()) Close(session_id);
  return status;
}

absl::StatusOr<std::shared_ptr<ucx::UcxRemoteKey>> UcxDataPlane::SessionKey(
    Session& session, absl::string_view rkey) {
  // A client keeps a pool of regions (ClientDataPlane::kMaxIdleRegions, and
  // those its calls hold), and the clients of a process share a session:
  // keeping only the last key unpacked had 8 clients' staged puts unpack
  // (attach and map) a region on almost every RPC.
  constexpr size_t kMaxKeys = 32;
  auto cached = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(session.mu)
      -> std::shared_ptr<ucx::UcxRemoteKey> {
    std::vector<Session::Key>& keys = session.keys;
    for (auto it = keys.begin(); it != keys.end(); ++it) {
      if (it->packed == rkey) {
        std::rotate(it, it + 1, keys.end());  // now the most recent
        return keys.back().key;
      }
    }
    return nullptr;
  };
  {
    absl::MutexLock lock(&session.mu);
    if (std::shared_ptr<ucx::UcxRemoteKey> key = cached()) return key;
  }
  // UCX unpacks a key trusting it; a throwaway process unpacks it first
  // (without the session's lock: it takes tens of ms).
  RETURN_IF_ERROR(ProbeUcxRkey(probe_path_, session.client_address, rkey, options_.ucx,
                               options_.address_probe_timeout));
  absl::MutexLock lock(&session.mu);
  if (std::shared_ptr<ucx::UcxRemoteKey> key = cached()) return key;  // another call was first
  ASSIGN_OR_RETURN(std::unique_ptr<ucx::UcxRemoteKey> unpacked,
                   session.endpoint->UnpackKey(rkey));
  std::vector<Session::Key>& keys = session.keys;
  if (keys.size() == kMaxKeys) keys.erase(keys.begin());  // a transfer may still hold it
  keys.push_back({.packed = std::string(rkey), .key = std::move(unpacked)});
  return keys.back().key;
}

absl::StatusOr<std::vector<PutResult>> UcxDataPlane::PullPut(
    const SessionId& session_id, uint64_t address, absl::string_view rkey,
    absl::Span<const PutSpec> specs, absl::Span<const uint64_t> region_offsets,
    absl::Time deadline) {
  ASSIGN_OR_RETURN(const std::shared_ptr<Session> session, FindSession(session_id));
  ASSIGN_OR_RETURN(std::shared_ptr<ucx::UcxRemoteKey> key, SessionKey(*session, rkey));
  // Each round of BatchPutFilled reads the bytes again from the client's
  // region; a failed read closes the session.
  bool read_failed = false;
  absl::StatusOr<std::vector<PutResult>> committed =
      store_->BatchPutFilled(specs, [&](const Reservation& reservation) -> absl::Status {
        std::vector<ucx::WriteSegment> segments;
        segments.reserve(specs.size());
        for (size_t i = 0; i < reservation.size(); ++i) {
          const absl::Span<uint8_t> slot = reservation.buffer(i);
          if (slot.empty()) continue;  // already stored
          segments.push_back({.local = slot.data(), .bytes = slot.size(),
                              .remote_address = address + region_offsets[i]});
        }
        absl::Status status = session->endpoint->Read(segments, *key, options_.window, deadline);
        read_failed = !status.ok();
        return status;
      });
  if (read_failed) {
    key.reset();
    Close(session_id);
  }
  return committed;
}

}  // namespace kvtier::store
