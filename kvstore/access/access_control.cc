#include "kvstore/access/access_control.h"

#include <utility>

#include "common/status_macros.h"

namespace kvtier::access {

absl::StatusOr<std::unique_ptr<AccessControl>> AccessControl::Open(std::string path) {
  ASSIGN_OR_RETURN(AccessTable table, AccessTable::Load(path));
  return std::unique_ptr<AccessControl>(
      new AccessControl(std::move(path), std::make_shared<const AccessTable>(std::move(table))));
}

AccessControl::AccessControl(std::string path, std::shared_ptr<const AccessTable> table)
    : path_(std::move(path)), current_(std::move(table)) {}

absl::Status AccessControl::Reload() {
  absl::MutexLock reload_lock(&reload_mu_);
  ASSIGN_OR_RETURN(AccessTable table, AccessTable::Load(path_));
  auto next = std::make_shared<const AccessTable>(std::move(table));
  {
    absl::MutexLock lock(&mu_);
    current_.swap(next);
    ++generation_;
  }
  // `next` now holds the previous table; the last snapshot holder frees it,
  // outside mu_ if that is us.
  return absl::OkStatus();
}

std::shared_ptr<const AccessTable> AccessControl::Current(uint64_t* generation) const {
  absl::MutexLock lock(&mu_);
  if (generation != nullptr) *generation = generation_;
  return current_;
}

bool AccessControl::IsCurrent(uint64_t generation) const {
  absl::MutexLock lock(&mu_);
  return generation_ == generation;
}

}  // namespace kvtier::access
