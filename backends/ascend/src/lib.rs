//! moehal ascend backend (under construction).
