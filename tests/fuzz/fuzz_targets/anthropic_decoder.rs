//! The `kelp/anthropic` provider's stream decoder; see [`kelp_fuzz::decoder::check`].

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    kelp_fuzz::decoder::check::<kelp_plugin_anthropic::decoder::MessagesDecoder>(data);
});
