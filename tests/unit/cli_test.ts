import assert from "node:assert/strict";
import { helpText, parseCommandLine, parseSeconds, USAGE } from "../../src/cli.ts";
import { UsageError } from "../../src/errors.ts";
import { unit } from "./_unit.ts";

function usageError(args: string[]): string {
  try {
    parseCommandLine(args);
  } catch (e) {
    assert.ok(e instanceof UsageError);
    assert.equal(e.exitCode, 2);
    return e.message;
  }
  assert.fail(`accepted ${JSON.stringify(args)}`);
}

unit("parseCommandLine() takes exactly one PATH", () => {
  assert.deepEqual(parseCommandLine(["/run/x.repair"]), {
    action: "run",
    path: "/run/x.repair",
    timeout: null,
    wait: false,
    verbose: false,
    hold: true,
    seccompKill: false,
  });
  assert.equal(usageError([]), "Missing PATH");
  assert.equal(usageError(["a", "b"]), "Exactly one PATH expected, got 2");
  assert.equal(usageError([""]), "PATH is empty");
});

unit("parseCommandLine() handles -- before a PATH starting with -", () => {
  const r = parseCommandLine(["--", "-weird.repair"]);
  assert.equal(r.action === "run" && r.path, "-weird.repair");
  assert.equal(usageError(["-weird.repair"]), "Unknown option -w");
});

unit("parseCommandLine() rejects unknown options and misplaced values", () => {
  assert.equal(usageError(["--bogus", "x"]), "Unknown option --bogus");
  assert.equal(usageError(["--timeout"]), "Option --timeout needs a value");
  assert.equal(usageError(["--wait=1", "x"]), "Option --wait takes no value");
});

unit("parseCommandLine() recognises --help, --version and --check", () => {
  assert.deepEqual(parseCommandLine(["-h"]), { action: "help" });
  assert.deepEqual(parseCommandLine(["--help", "x", "y"]), { action: "help" });
  assert.deepEqual(parseCommandLine(["--version"]), { action: "version" });
  assert.deepEqual(parseCommandLine(["--check"]), {
    action: "check",
    verbose: false,
    seccompKill: false,
  });
  assert.equal(usageError(["--check", "x"]), "--check takes no PATH");
});

unit("parseCommandLine() reads --timeout, --wait and --verbose", () => {
  assert.deepEqual(parseCommandLine(["--timeout", "2.5", "--wait", "--verbose", "p"]), {
    action: "run",
    path: "p",
    timeout: 2.5,
    wait: true,
    verbose: true,
    hold: true,
    seccompKill: false,
  });
  assert.deepEqual(parseCommandLine(["--timeout=.5", "p"]), {
    action: "run",
    path: "p",
    timeout: 0.5,
    wait: false,
    verbose: false,
    hold: true,
    seccompKill: false,
  });
});

unit("parseCommandLine() turns the input hold off with --no-hold", () => {
  const r = parseCommandLine(["--no-hold", "p"]);
  assert.equal(r.action === "run" && r.hold, false);
  assert.equal(usageError(["--no-hold=1", "p"]), "Option --no-hold takes no value");
});

unit("parseCommandLine() reads --seccomp-kill, which only strengthens the filters", () => {
  const run = parseCommandLine(["--seccomp-kill", "p"]);
  assert.equal(run.action === "run" && run.seccompKill, true);
  const check = parseCommandLine(["--check", "--seccomp-kill"]);
  assert.equal(check.action === "check" && check.seccompKill, true);
  assert.equal(usageError(["--seccomp-kill=1", "p"]), "Option --seccomp-kill takes no value");
});

unit("parseSeconds() accepts positive decimals only", () => {
  assert.deepEqual(["1", "0.25", "60", "3.", ".5"].map(parseSeconds), [1, 0.25, 60, 3, 0.5]);
  for (const bad of ["0", "-1", "abc", "1e3", "Infinity", "NaN", "", "1s", "0x10"]) {
    assert.throws(() => parseSeconds(bad), UsageError, bad);
  }
});

unit("HELP starts with the usage and documents every option", () => {
  assert.ok(helpText().startsWith(USAGE));
  for (
    const option of [
      "--help",
      "--version",
      "--timeout",
      "--wait",
      "--verbose",
      "--no-hold",
      "--seccomp-kill",
      "--check",
      "--",
    ]
  ) {
    assert.ok(helpText().includes(option), option);
  }
});

unit("parseCommandLine() says what is wrong with a negative --timeout", () => {
  const positive = '--timeout needs a positive number of seconds, not "-1"';
  assert.equal(usageError(["--timeout", "-1", "p"]), positive);
  assert.equal(usageError(["--timeout=-1", "p"]), positive);
  assert.equal(
    usageError(["--timeout", "0", "p"]),
    '--timeout needs a positive number of seconds, not "0"',
  );
  // As getopt does, the next argument is the value, whatever it looks like
  assert.equal(
    usageError(["--timeout", "--wait", "p"]),
    '--timeout needs a number of seconds, not "--wait"',
  );
  assert.equal(usageError(["--timeout=", "p"]), '--timeout needs a number of seconds, not ""');
});

unit(
  "parseCommandLine() takes options after PATH, the last of a repeated one, and '-' as PATH",
  () => {
    assert.deepEqual(parseCommandLine(["p", "--verbose", "--timeout", "1", "--timeout=2"]), {
      action: "run",
      path: "p",
      timeout: 2,
      wait: false,
      verbose: true,
      hold: true,
      seccompKill: false,
    });
    const dash = parseCommandLine(["-"]);
    assert.equal(dash.action === "run" && dash.path, "-");
    // After --, everything is a positional, even an option's name
    assert.equal(usageError(["--", "--verbose", "p"]), "Exactly one PATH expected, got 2");
    const after = parseCommandLine(["--verbose", "--", "--wait"]);
    assert.equal(after.action === "run" && after.path, "--wait");
  },
);

unit("parseCommandLine() reads short options grouped, and names the unknown letter", () => {
  assert.deepEqual(parseCommandLine(["-hh"]), { action: "help" });
  assert.equal(usageError(["-hx"]), "Unknown option -x");
  assert.equal(usageError(["--help=yes"]), "Option --help takes no value");
  assert.equal(usageError(["--=x"]), "Unknown option --");
});

unit("HELP aligns every option's description in one column", () => {
  const options = helpText().split("\nOptions:\n")[1]!.split("\n\n")[0]!.split("\n");
  const column = (line: string) => /^(\s+-\S*(?: \S+)*?\s{2,}|\s+)\S/.exec(line)![1]!.length;
  const columns = new Set(options.map(column));
  assert.equal(columns.size, 1, options.join("\n"));
  assert.ok(options.every((l) => l.length <= 78), "no line wider than 78");
});
