// The data plane's wire contract beside store.proto: the UCX active
// messages a client and the server exchange on a session's endpoint, and
// the tags of tagged page transfers. The generic UCX wrappers (ucx/) carry
// these bytes without knowing them.
//
// Requests as active messages (kvstore/dataplane/DATA_PLANE.md): a client
// sends message kRequestMessageId with a RequestHeader as the UCX header and
// a serialized kvtier.v1 request as the data, asking for a reply endpoint;
// the server answers on that endpoint with kReplyMessageId, a ReplyHeader
// and either the serialized response (code 0) or an error message.
//
// Headers travel as their in-memory bytes: both ends are the same build on
// little-endian hosts, and a header of another size is refused.
#ifndef KVTIER_PROTO_KVTIER_V1_DATA_PLANE_H_
#define KVTIER_PROTO_KVTIER_V1_DATA_PLANE_H_

#include <cstdint>

#include "absl/strings/string_view.h"
#include "common/random_id.h"

namespace kvtier::wire {

// A data-plane session's id (store.proto: OpenDataPlaneResponse).
struct SessionIdTag {
  static constexpr absl::string_view kField = "session_id";
};
using SessionId = RandomId<SessionIdTag>;

inline constexpr unsigned kRequestMessageId = 1;  // client -> server
inline constexpr unsigned kReplyMessageId = 2;    // server -> client

// RequestHeader::op values, each a serialized kvtier.v1 request answered by
// its serialized response. kMappedGetOp: a BatchGetRequest with
// arena_session_id, answered by a BatchGetResponse. kReservePutOp and
// kCommitPutOp: the RPCs of the same names for a put the client copies into
// the mapped arena itself (not tagged), answered by a ReservePutResponse and
// a BatchPutResponse.
inline constexpr uint32_t kMappedGetOp = 1;
inline constexpr uint32_t kReservePutOp = 2;
inline constexpr uint32_t kCommitPutOp = 3;

struct RequestHeader {
  uint64_t request_id = 0;
  SessionId session_id;
  uint32_t op = 0;
  uint32_t reserved = 0;
};
static_assert(sizeof(RequestHeader) == 32);

struct ReplyHeader {
  uint64_t request_id = 0;
  int32_t code = 0;  // absl::StatusCode; the data is the error message unless 0
  uint32_t reserved = 0;
};
static_assert(sizeof(ReplyHeader) == 16);

// Tagged transfers (ReservePutRequest.tagged, DataPlaneRegion.tag): page i
// of a transfer travels with tag base + i. A base has its low
// kTagIndexBits bits zero (the server's transfer ids, a client's tag bases),
// so the tags of two transfers never meet; a transfer holds at most
// kMaxTagPages pages. The server's transfer ids are random in the other 48
// bits.
inline constexpr int kTagIndexBits = 16;
inline constexpr uint32_t kMaxTagPages = uint32_t{1} << kTagIndexBits;
inline constexpr uint64_t kTagIndexMask = (uint64_t{1} << kTagIndexBits) - 1;

constexpr bool IsTagBase(uint64_t base) { return base != 0 && (base & kTagIndexMask) == 0; }
// REQUIRES: IsTagBase(base).
constexpr uint64_t PageTag(uint64_t base, uint32_t page_index) { return base | page_index; }
// The n-th tag base (n >= 1) of a counter.
constexpr uint64_t NthTagBase(uint64_t n) { return n << kTagIndexBits; }

}  // namespace kvtier::wire

#endif  // KVTIER_PROTO_KVTIER_V1_DATA_PLANE_H_
