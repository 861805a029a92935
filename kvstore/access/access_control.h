// AccessControl: the server's current access table, read from its access
// file at start and read again on demand (the server calls Reload on
// SIGHUP). A reload that fails changes nothing: the previous table keeps
// serving, so a half-written or mistyped file never locks every client out.
//
//   ASSIGN_OR_RETURN(std::unique_ptr<AccessControl> access,
//                    AccessControl::Open("/etc/kvtier/access.txt"));
//   std::shared_ptr<const AccessTable> table = access->Current();
//   std::optional<Identity> caller = table->FindToken(bearer_token);
//
// Thread-safety: thread-safe. Current() is a snapshot: a table handed out
// stays valid and unchanged for as long as its holder keeps it, whatever
// reloads happen meanwhile. Reloads are serialized, so the table that wins
// is always the one read last.
#ifndef KVTIER_KVSTORE_ACCESS_ACCESS_CONTROL_H_
#define KVTIER_KVSTORE_ACCESS_ACCESS_CONTROL_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "kvstore/access/access_table.h"

namespace kvtier::access {

class AccessControl {
 public:
  // Loads `path` (AccessTable::Load); its error when that fails.
  static absl::StatusOr<std::unique_ptr<AccessControl>> Open(std::string path);

  AccessControl(const AccessControl&) = delete;
  AccessControl& operator=(const AccessControl&) = delete;

  // Loads path() again and makes it the current table. On any error returns
  // it (as AccessTable::Load does) and keeps the previous table.
  absl::Status Reload() ABSL_LOCKS_EXCLUDED(reload_mu_, mu_);

  // The current table; never null. `generation` (optional): the number of
  // reloads that installed a table before it (0 for the file Open read),
  // read together with it.
  std::shared_ptr<const AccessTable> Current(uint64_t* generation = nullptr) const
      ABSL_LOCKS_EXCLUDED(mu_);
  // Whether the current table is still the one of `generation`: false once
  // a reload has installed another (whatever it says). What a table granted
  // for longer than one call (a session, a lane, a stream) is registered
  // only while this holds, so that a reload's closing of what the old
  // table granted reaches it.
  bool IsCurrent(uint64_t generation) const ABSL_LOCKS_EXCLUDED(mu_);

  const std::string& path() const { return path_; }

 private:
  AccessControl(std::string path, std::shared_ptr<const AccessTable> table);

  // Const after construction.
  const std::string path_;

  // Held for a whole Reload, file read included, so that two reloads
  // cannot install their tables out of order; Current() never waits on it.
  absl::Mutex reload_mu_ ABSL_ACQUIRED_BEFORE(mu_);

  mutable absl::Mutex mu_;
  std::shared_ptr<const AccessTable> current_ ABSL_GUARDED_BY(mu_);  // never null
  uint64_t generation_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace kvtier::access

#endif  // KVTIER_KVSTORE_ACCESS_ACCESS_CONTROL_H_
