//! moehal C ABI (under construction).
