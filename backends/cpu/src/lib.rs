//! moehal cpu backend (under construction).
