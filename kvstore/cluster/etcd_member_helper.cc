// A member in its own process, for etcd_membership_test: a test freezes it
// with SIGSTOP to stop its keep-alives.
//
//   etcd_member_helper ENDPOINT PREFIX ID ADDRESS TTL_S
//
// Registers ID as MEMBER_UP and prints "ready" (or "error: ..." and exits
// 1). Then reads stdin lines: a MemberState name (e.g. MEMBER_DRAINING) sets
// its state and prints "ok" or "error: ..."; end of input leaves and exits.
#include <cstdio>
#include <iostream>
#include <string>

#include "absl/strings/numbers.h"
#include "kvstore/cluster/membership.h"

int main(int argc, char** argv) {
  int64_t ttl_s = 0;
  if (argc != 6 || !absl::SimpleAtoi(argv[5], &ttl_s)) {
    std::cerr << "usage: etcd_member_helper ENDPOINT PREFIX ID ADDRESS TTL_S\n";
    return 2;
  }
  kvtier::cluster::EtcdMembershipOptions options;
  options.endpoints = {argv[1]};
  options.prefix = argv[2];
  options.lease_ttl = absl::Seconds(ttl_s);
  kvtier::v1::Member self;
  self.set_id(argv[3]);
  self.set_address(argv[4]);
  self.set_state(kvtier::v1::MEMBER_UP);
  auto membership = kvtier::cluster::StartEtcdMembership(options, self);
  if (!membership.ok()) {
    std::cout << "error: " << membership.status() << std::endl;
    return 1;
  }
  std::cout << "ready" << std::endl;
  std::string line;
  while (std::getline(std::cin, line)) {
    kvtier::v1::MemberState state = kvtier::v1::MEMBER_STATE_UNSPECIFIED;
    if (!kvtier::v1::MemberState_Parse(line, &state)) {
      std::cout << "error: no state " << line << std::endl;
      continue;
    }
    const absl::Status status = (*membership)->SetSelfState(state);
    if (status.ok()) {
      std::cout << "ok" << std::endl;
    } else {
      std::cout << "error: " << status << std::endl;
    }
  }
  (*membership)->Leave();
  return 0;
}
