// UcxDataPlane::Session, for the files that implement UcxDataPlane
// (ucx_data_plane.cc: sessions and transfers; ucx_data_plane_regions.cc:
// the client's registered regions). Not for other users.
#ifndef KVTIER_KVSTORE_DATAPLANE_UCX_DATA_PLANE_SESSION_H_
#define KVTIER_KVSTORE_DATAPLANE_UCX_DATA_PLANE_SESSION_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "kvstore/dataplane/ucx_data_plane.h"
#include "ucx/endpoint.h"
#include "ucx/memory.h"

namespace kvtier::store {

// One client connection. Members are destroyed in reverse order: the
// cached remote key before the endpoint it was unpacked on.
struct UcxDataPlane::Session {
  std::string client_address;  // as probed at Open
  uint64_t owner = 0;
  std::unique_ptr<ucx::UcxEndpoint> endpoint;
  uint64_t last_use = 0;  // guarded by UcxDataPlane::mu_
  absl::Mutex mu;
  // Keys of the client's regions, unpacked, most recently used last.
  struct Key {
    std::string packed;
    std::shared_ptr<ucx::UcxRemoteKey> key;
  };
  std::vector<Key> keys ABSL_GUARDED_BY(mu);
};

}  // namespace kvtier::store

#endif  // KVTIER_KVSTORE_DATAPLANE_UCX_DATA_PLANE_SESSION_H_
