//! Ascend ACL emulator (under construction).
