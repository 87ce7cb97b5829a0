//! `/proc/cmdline` → `kernel_cmdline::parse`: never panics, errors are one
//! line, and whatever parses renders back to the same options.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The kernel hands over bytes; lossy decoding keeps every input useful
    // (and is what a robust agent does with a non-UTF-8 command line).
    let line = String::from_utf8_lossy(data);

    let _ = kernel_cmdline::split(&line);
    let _ = kernel_cmdline::on_error_hint(&line);

    match kernel_cmdline::parse(&line) {
        Ok(opts) => {
            let rendered = kernel_cmdline::render(&opts);
            assert_eq!(
                kernel_cmdline::parse(&rendered).as_ref(),
                Ok(&opts),
                "render of {line:?} is {rendered:?}"
            );
            let _ = opts.summary();
        }
        Err(e) => {
            let msg = e.to_string();
            assert!(!msg.contains(['\n', '\r']), "multi-line error {msg:?}");
        }
    }
});
