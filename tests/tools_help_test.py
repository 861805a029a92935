"""--help of every program that parses its flags with abseil lists that
program's own flags (common/tool_usage.h), not "No flags matched";
kvtier-profile's lists its commands."""
import os
import subprocess
import sys
import unittest

BIN_DIR = os.environ["KVTIER_BIN_DIR"]

# Each program and flags it defines itself.
PROGRAMS = {
    "kvtier-server": ["--listen", "--data_dir", "--access_file"],
    "kvtier-eval": ["--prefix_lengths", "--model", "--target"],
    "kvtier-sim": ["--policy", "--trace", "--budget_pages"],
    "kvtier-bench": ["--page_sizes", "--clients", "--target"],
    "kvtierctl": ["--target", "--tokens"],
    "kvtier-cluster-bench": ["--seeds", "--clients"],
}


class ToolsHelpTest(unittest.TestCase):
    def test_help_lists_the_programs_own_flags(self):
        for program, flags in PROGRAMS.items():
            with self.subTest(program=program):
                run = subprocess.run([os.path.join(BIN_DIR, program), "--help"],
                                     capture_output=True, text=True, timeout=60)
                text = run.stdout + run.stderr
                self.assertNotIn("No flags matched", text)
                self.assertIn(program, text.splitlines()[0])
                for flag in flags:
                    self.assertIn(flag + " (", text, flag)
                # abseil's own flags stay under --helpfull.
                self.assertNotIn("--flagfile (", text)

    def test_profile_help_lists_its_commands(self):
        run = subprocess.run([os.path.join(BIN_DIR, "kvtier-profile"), "--help"],
                             capture_output=True, text=True, timeout=60)
        self.assertEqual(run.returncode, 0)
        for command in ("xkv --trace", "lukv --trace", "lukv-table --profile",
                        "allocate --layers"):
            self.assertIn("kvtier-profile " + command, run.stdout)

    def test_helpfull_still_lists_abseils_flags(self):
        run = subprocess.run([os.path.join(BIN_DIR, "kvtier-sim"), "--helpfull"],
                             capture_output=True, text=True, timeout=60)
        self.assertIn("--flagfile (", run.stdout + run.stderr)


if __name__ == "__main__":
    sys.exit(unittest.main())
