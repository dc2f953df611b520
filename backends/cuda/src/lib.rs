//! moehal cuda backend (under construction).
