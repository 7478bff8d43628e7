// The end-to-end test: a real VM, migrated from one QEMU to the next through
// real passt, with our helper putting the guest's connections into repair
// mode on each side. Started by e2e.sh (deno task e2e) once prepare.sh has
// made the environment; the README says what it proves.
//
// Per variant: a network namespace of its own, a server on its loopback, one
// VM (QEMU 0 + passt 0) whose guest holds N connections to the server,
// streaming a checked pattern both ways; then a chain of migrations
// 0 -> 1 -> 2 ..., each with fresh helpers on both sides.

import { type HoldMechanism, parseHelperLog, parseStraceTampering } from "./helper_log.ts";
import { parsePasstLog, type PasstMigrationLog, raceFlows } from "./passt_log.ts";
import { Qmp } from "./qmp.ts";
import {
  run,
  start,
  type Started,
  stop,
  stopAll,
  suspend,
  Tail,
  until,
  waitExit,
} from "./procs.ts";
import {
  lostHostToGuest,
  parseStream,
  stalledHostToGuest,
  type StreamReport,
} from "./stream_status.ts";
import {
  countLine,
  type MigrationRecord,
  timingTable,
  variantLine,
  type VariantResult,
} from "./summary.ts";

const HERE = new URL(".", import.meta.url).pathname;
const REPO = new URL("../../", import.meta.url).pathname;
const INTREE = `${HERE}intree.sh`;

// ---------------------------------------------------------------- settings

function env(name: string, fallback: string): string {
  return Deno.env.get(name) ?? fallback;
}

const CACHE = env("PASST_REPAIR_E2E_CACHE", "/var/cache/passt-repair-e2e");
const MIGRATIONS = Number(env("PASST_REPAIR_E2E_MIGRATIONS", "3"));
const CONNS = env("PASST_REPAIR_E2E_CONNS", "1,300").split(",").map(Number);
const USER = env("PASST_REPAIR_E2E_USER", "nobody");
/** Issue 14's forced race: strace's -e argument, attached to the source passt before each migration */
const SOURCE_STRACE = env("PASST_REPAIR_E2E_SOURCE_STRACE", "");
const RETRIES = 2; // passt's race only, per migration
/** Migrations the forced race's negative control may take to lose bytes */
const CONTROL_TRIES = 3;
/** tests/e2e/host/fail_write.c, built into the run folder when a rollback variant runs */
const FAIL_WRITE = { path: "" };
const GUEST_ADDR = "10.77.0.2";
const GATEWAY = "10.77.0.1";
const CHUNK = 200;
/**
 * Segments each connection must carry, each way, past the most any carried
 * before the migration: more than the queues passt moves, so a connection
 * that stalls after its restored queue is delivered fails
 */
const PROGRESS = 10;

type Helper = "ours" | "ours-user" | "bundle" | "c" | "none";
type PasstVersion = "2025" | "2026";

interface Variant {
  name: string;
  helper: Helper;
  passt: PasstVersion;
  /** How the target's helper finds passt's repair socket */
  target: "directory" | "wait" | "socket";
  /**
   * Issue 14, with strace on the source passt (REAL-PASST-NOTES): "race"
   * delays its receive-queue reads under dense traffic, so that without the
   * input hold a segment lands between the queue's dump and the sequence
   * read; "rollback" makes its first write of flow data fail, so that it
   * turns repair mode off again and the VM stays where it was
   */
  forced?: "race" | "rollback";
  /** --no-hold on both helpers: the forced race's negative control */
  noHold?: boolean;
}

const ALL_VARIANTS: Variant[] = [
  { name: "root-2025-dir", helper: "ours", passt: "2025", target: "directory" },
  { name: "root-2026-wait", helper: "ours", passt: "2026", target: "wait" },
  { name: "user-2025-dir", helper: "ours-user", passt: "2025", target: "directory" },
  { name: "user-2026-dir", helper: "ours-user", passt: "2026", target: "directory" },
  { name: "bundle-2025-wait", helper: "bundle", passt: "2025", target: "wait" },
  { name: "c-2025", helper: "c", passt: "2025", target: "socket" },
  { name: "c-2026", helper: "c", passt: "2026", target: "socket" },
  { name: "none-2025", helper: "none", passt: "2025", target: "socket" },
  {
    name: "race-hold-2025",
    helper: "ours",
    passt: "2025",
    target: "directory",
    forced: "race",
  },
  {
    name: "race-hold-user-2025",
    helper: "ours-user",
    passt: "2025",
    target: "directory",
    forced: "race",
  },
  {
    name: "race-nohold-2025",
    helper: "ours",
    passt: "2025",
    target: "directory",
    forced: "race",
    noHold: true,
  },
  {
    name: "rollback-2025",
    helper: "ours",
    passt: "2025",
    target: "directory",
    forced: "rollback",
  },
];

/** A variant that stopped because passt died after a correct rollback */
function isPasstDeath(r: VariantResult): boolean {
  return r.migrations.at(-1)?.outcome === "passt-died";
}

/** A variant that passes only if its migration fails (no helper, or the hold off) */
function isControl(v: Variant): boolean {
  return v.helper === "none" || v.noHold === true;
}

/** Migrations each variant asks for: a control stops at its first (expected) failure */
function migrationsFor(v: Variant): number {
  if (v.helper === "none") return 1;
  // The forced race must show within a few tries, or the control failed
  if (v.noHold) return CONTROL_TRIES;
  // The rollback, then one migration that succeeds
  if (v.forced === "rollback") return 2;
  return MIGRATIONS;
}

/** The hold each helper must report (--verbose "input hold:"), for issue 14's variants */
function expectedHold(v: Variant): HoldMechanism | null {
  if (!v.forced) return null;
  if (v.noHold) return "off";
  // As root the eBPF program loads; with only CAP_NET_ADMIN it falls back to a classic filter
  return v.helper === "ours-user" ? "classic" : "ebpf";
}

function chosenVariants(): Variant[] {
  const want = Deno.env.get("PASST_REPAIR_E2E_VARIANTS");
  if (!want) return ALL_VARIANTS;
  const names = want.split(",").map((s) => s.trim()).filter(Boolean);
  for (const n of names) {
    if (!ALL_VARIANTS.some((v) => v.name === n)) {
      throw new Error(
        `unknown variant ${n} (known: ${ALL_VARIANTS.map((v) => v.name).join(", ")})`,
      );
    }
  }
  return ALL_VARIANTS.filter((v) => names.includes(v.name));
}

interface Env {
  tree: string;
  kernel: string;
  initramfs: string;
  stream: string;
  passt: Record<PasstVersion, string>;
  passtVersion: Record<PasstVersion, string>;
  cRepair: Record<PasstVersion, string>;
  qemu: string;
  qemuVersion: string;
}

async function readEnv(): Promise<Env> {
  const text = await Deno.readTextFile(`${CACHE}/env.sh`);
  const v = (k: string) => {
    const m = new RegExp(`^${k}=(.*)$`, "m").exec(text);
    if (!m) throw new Error(`${CACHE}/env.sh has no ${k}: run tests/e2e/prepare.sh`);
    return m[1]!;
  };
  return {
    tree: v("E2E_TREE"),
    kernel: v("E2E_KERNEL"),
    initramfs: v("E2E_INITRAMFS"),
    stream: v("E2E_STREAM"),
    passt: { "2025": v("E2E_PASST_2025"), "2026": v("E2E_PASST_2026") },
    passtVersion: { "2025": v("E2E_PASST_2025_VERSION"), "2026": v("E2E_PASST_2026_VERSION") },
    cRepair: { "2025": "/usr/bin/passt-repair", "2026": "/opt/passt-2026/usr/bin/passt-repair" },
    qemu: v("E2E_QEMU"),
    qemuVersion: v("E2E_QEMU_VERSION"),
  };
}

// ------------------------------------------------------------- one variant

class Failure extends Error {}

/** A file's text, or "" if there is none (a log that a failed start never wrote) */
async function readOr(path: string): Promise<string> {
  try {
    return await Deno.readTextFile(path);
  } catch {
    return "";
  }
}

/** Network namespaces made and not yet deleted: an interrupted run deletes them too */
const namespaces = new Set<string>();

interface Node {
  index: number;
  dir: string;
  passt: Started;
  passtLog: Tail;
  qemu: Started;
  qmp: Qmp | null;
  serial: Tail;
}

class Chain {
  readonly ns: string;
  readonly dir: string;
  readonly port: number;
  readonly interval: number;
  server: Started | null = null;
  readonly serverLog: Tail;
  readonly records: MigrationRecord[] = [];
  uid = 0;
  gid = 0;
  helperProgram: string[] = [];
  /** The next node's number: a rolled-back migration's target is not reused */
  nextIndex = 1;

  constructor(
    readonly e: Env,
    readonly v: Variant,
    readonly conns: number,
    runDir: string,
    seq: number,
    /** 0, or which repeat of the variant this is (each in a folder of its own) */
    again = 0,
  ) {
    this.ns = `pr-e2e-${Deno.pid}-${seq}`;
    this.dir = `${runDir}/${v.name}-${conns}${again ? `-again${again}` : ""}`;
    this.port = 10001;
    // One segment per connection and direction every 100 ms, slower with
    // many connections (TCG is slow). Denser traffic makes passt's own losses
    // (REAL-PASST-NOTES: a segment landing while passt dumps a socket) more
    // frequent without testing the helper any better.
    // The forced race wants dense traffic: a segment every 5 ms lands
    // within the 20 ms delay for sure (at 1 connection; at 300, one every
    // 2 ms in all).
    this.interval = v.forced === "race" ? Math.max(5, conns * 2) : Math.max(100, conns * 2);
    this.serverLog = new Tail(`${this.dir}/server.log`);
  }

  get unprivileged(): boolean {
    return this.v.helper === "ours-user";
  }

  /** A command in the tree, in a private mount namespace; in the run's netns if `netns` */
  inTree(argv: readonly string[], netns: boolean): string[] {
    const base = [
      "unshare",
      "--mount",
      "--propagation",
      "private",
      "bash",
      INTREE,
      this.e.tree,
      this.dir,
    ];
    return netns ? ["ip", "netns", "exec", this.ns, ...base, ...argv] : [...base, ...argv];
  }

  async setUp(): Promise<void> {
    await Deno.mkdir(this.dir, { recursive: true });
    await Deno.chmod(this.dir, 0o755);
    await Deno.copyFile(this.e.initramfs, `${this.dir}/initramfs.gz`);
    await run(["ip", "netns", "add", this.ns]);
    namespaces.add(this.ns);
    // a veth pair inside the namespace: passt needs an interface with an
    // address and a default route; nothing is connected to the outside
    const ip = (...a: string[]) => run(["ip", "-n", this.ns, ...a]);
    await ip("link", "add", "e2e0", "type", "veth", "peer", "name", "e2e1");
    await ip("link", "set", "lo", "up");
    await ip("link", "set", "e2e0", "up");
    await ip("link", "set", "e2e1", "up");
    await ip("addr", "add", `${GUEST_ADDR}/24`, "dev", "e2e0");
    await ip("route", "add", "default", "via", GATEWAY);
    if (this.unprivileged) {
      this.uid = Number((await run(["id", "-u", USER])).out.trim());
      this.gid = Number((await run(["id", "-g", USER])).out.trim());
    }
    this.server = start(
      "server",
      [
        "ip",
        "netns",
        "exec",
        this.ns,
        this.e.stream,
        "server",
        "127.0.0.1",
        String(this.port),
        String(CHUNK),
        String(this.interval),
      ],
      this.serverLog.path,
    );
  }

  async tearDown(): Promise<void> {
    await stopAll();
    await run(["ip", "netns", "del", this.ns], { allowFailure: true });
    namespaces.delete(this.ns);
  }

  nodeDir(i: number): string {
    return `${this.dir}/p${i}`;
  }

  async startNode(i: number, incoming: boolean): Promise<Node> {
    const dir = this.nodeDir(i);
    await Deno.mkdir(dir, { recursive: true });
    if (this.unprivileged) await Deno.chown(dir, this.uid, this.gid);
    const passtArgs = [
      this.e.passt[this.v.passt],
      "-f",
      "-d",
      "--vhost-user",
      "-s",
      `${dir}/passt.socket`,
      "-P",
      `${dir}/passt.pid`,
      ...(this.v.passt === "2026" ? ["--migrate-exit", "--migrate-no-linger"] : []),
    ];
    // As libvirt and KubeVirt do: passt started as the helper's user, so
    // that its repair socket is that user's
    const asUser = this.unprivileged
      ? ["setpriv", `--reuid=${this.uid}`, `--regid=${this.gid}`, "--clear-groups", "--"]
      : [];
    const passtLog = new Tail(`${dir}/passt.log`);
    const passt = start("passt", this.inTree([...asUser, ...passtArgs], true), passtLog.path, {
      pidfile: `${dir}/passt.pid`,
    });
    // The socket's file appears when passt binds it, but passt listens only
    // after printing its configuration: a QEMU that connects in between is
    // refused. "You can start qemu with:" comes after listen().
    await until(`passt ${i} to listen`, 10000, async () => {
      if (passt.status) throw new Failure(`passt ${i} exited: see ${passtLog.path}`);
      return (await passtLog.read()).includes("start qemu");
    });
    const append = [
      "console=ttyS0",
      "quiet",
      "panic=-1",
      `e2e.addr=${GUEST_ADDR}/24`,
      `e2e.gw=${GATEWAY}`,
      `e2e.port=${this.port}`,
      `e2e.n=${this.conns}`,
      `e2e.chunk=${CHUNK}`,
      `e2e.interval=${this.interval}`,
    ].join(" ");
    const qemuArgs = [
      this.e.qemu,
      "-M",
      "pc,accel=tcg", // /dev/kvm here is kvm_pvm, unusable by a standard guest
      "-m",
      "256M",
      "-smp",
      "1",
      "-nodefaults",
      "-no-user-config",
      "-display",
      "none",
      "-object",
      "memory-backend-memfd,id=m,size=256M,share=on", // vhost-user needs shared memory
      "-numa",
      "node,memdev=m",
      "-chardev",
      `socket,id=c,path=${dir}/passt.socket`,
      "-netdev",
      "vhost-user,id=n,chardev=c",
      "-device",
      "virtio-net-pci,netdev=n,mac=52:54:00:12:34:56",
      "-kernel",
      this.e.kernel,
      "-initrd",
      `${this.dir}/initramfs.gz`,
      "-append",
      append,
      "-serial",
      `file:${dir}/serial.log`,
      "-qmp",
      "stdio",
      "-pidfile",
      `${dir}/qemu.pid`,
      ...(incoming ? ["-incoming", `unix:${dir}/migration.sock`] : []),
    ];
    const qemu = start("qemu", this.inTree(qemuArgs, false), `${dir}/qemu.log`, {
      pidfile: `${dir}/qemu.pid`,
      piped: true,
    });
    let qmp: Qmp;
    try {
      qmp = await Qmp.open(qemu.child);
    } catch (e) {
      throw new Failure(`QEMU ${i}: ${e instanceof Error ? e.message : e}; see ${dir}/qemu.log`);
    }
    return { index: i, dir, passt, passtLog, qemu, qmp, serial: new Tail(`${dir}/serial.log`) };
  }

  /** The command that runs our helper, or Debian's C one, with `args` */
  helperCommand(args: string[]): string[] {
    const deno = Deno.execPath();
    if (this.v.noHold) args = ["--no-hold", ...args];
    switch (this.v.helper) {
      case "ours":
        return [deno, "run", "--allow-ffi", `${REPO}main.ts`, "--verbose", ...args];
      case "ours-user":
        return [
          "setpriv",
          `--reuid=${this.uid}`,
          `--regid=${this.gid}`,
          "--clear-groups",
          "--inh-caps=+net_admin",
          "--ambient-caps=+net_admin",
          ...this.helperProgram,
          "--verbose",
          ...args,
        ];
      case "bundle":
        return [`${REPO}dist/passt-repair.sh`, "--verbose", ...args];
      case "c":
        return this.inTree([this.e.cRepair[this.v.passt], ...args], false);
      case "none":
        throw new Error("no helper in this variant");
    }
  }

  helperEnv(): Record<string, string> {
    if (this.v.helper === "bundle") return { DENO: Deno.execPath() };
    if (this.v.helper === "ours-user") {
      return { DENO_DIR: `${this.dir}/deno-dir`, HOME: `${this.dir}/deno-dir` };
    }
    return {};
  }

  /**
   * The unprivileged helper must read what it runs: when this checkout or
   * Deno is not readable by the user, a world-readable copy in the run folder.
   */
  async prepareUserProgram(): Promise<void> {
    const deno = Deno.execPath();
    const canRead = async (path: string) =>
      (await run([
        "setpriv",
        `--reuid=${this.uid}`,
        `--regid=${this.gid}`,
        "--clear-groups",
        "test",
        "-r",
        path,
      ], {
        allowFailure: true,
      })).code === 0;
    let denoPath = deno;
    if (!(await canRead(deno))) {
      denoPath = `${this.dir}/deno`;
      await Deno.copyFile(deno, denoPath);
      await Deno.chmod(denoPath, 0o755);
    }
    let main = `${REPO}main.ts`;
    if (!(await canRead(main)) || !(await canRead(`${REPO}src/cli.ts`))) {
      const copy = `${this.dir}/program`;
      await Deno.mkdir(copy, { recursive: true });
      await run(["cp", "-r", `${REPO}main.ts`, `${REPO}src`, `${REPO}deno.json`, `${copy}/`]);
      await run(["chmod", "-R", "a+rX", copy]);
      main = `${copy}/main.ts`;
    }
    await Deno.mkdir(`${this.dir}/deno-dir`, { recursive: true });
    await Deno.chown(`${this.dir}/deno-dir`, this.uid, this.gid);
    this.helperProgram = [denoPath, "run", "--allow-ffi", main];
  }

  async streams(node: Node): Promise<{ guest: StreamReport; server: StreamReport }> {
    return {
      guest: parseStream(await node.serial.read()),
      server: parseStream(await this.serverLog.read()),
    };
  }

  /** Waits until both ends hold all connections and `check` holds */
  async waitStreams(
    node: Node,
    what: string,
    ms: number,
    check: (g: StreamReport, s: StreamReport) => boolean,
  ): Promise<{ guest: StreamReport; server: StreamReport }> {
    return await until(what, ms, async () => {
      if (node.qemu.status) throw new Failure(`QEMU ${node.index} exited`);
      const r = await this.streams(node);
      return check(r.guest, r.server) ? r : null;
    });
  }

  async nft(script: string): Promise<string> {
    const file = `${this.dir}/nft.rules`;
    await Deno.writeTextFile(file, script);
    return (await run(this.inTree(["/usr/sbin/nft", "-f", file], true))).out;
  }

  async nftCount(): Promise<number> {
    const out =
      (await run(this.inTree(["/usr/sbin/nft", "list", "table", "inet", "pr_e2e"], true))).out;
    const m = /counter packets (\d+)/.exec(out);
    return m ? Number(m[1]) : 0;
  }

  /**
   * A new target node and fresh helpers on both sides, every one connected
   * (passt waits only 10 ms for a helper once migrating)
   */
  async prepareMigration(src: Node): Promise<{ dst: Node; helpers: Started[] }> {
    const i = this.nextIndex++;
    const dstDir = this.nodeDir(i);
    await Deno.mkdir(dstDir, { recursive: true });
    if (this.unprivileged) await Deno.chown(dstDir, this.uid, this.gid);
    const helpers: Started[] = [];
    const env = this.helperEnv();
    const withHelper = this.v.helper !== "none";

    // The target's helper before the target's passt (directory or --wait)
    if (withHelper && this.v.target !== "socket") {
      const args = this.v.target === "wait"
        ? ["--wait", `${dstDir}/passt.socket.repair`]
        : [dstDir];
      const h = start(
        `target helper ${i}`,
        this.helperCommand(args),
        `${dstDir}/helper-target.log`,
        { env },
      );
      helpers.push(h);
      const log = new Tail(h.log);
      await until(`target helper ${i} to wait for passt`, 30000, async () => {
        if (h.status) throw new Failure(`target helper ${i} exited early: ${await log.read()}`);
        return (await log.read()).includes("waiting for");
      });
    }
    const dst = await this.startNode(i, true);
    if (withHelper && this.v.target === "socket") {
      helpers.push(
        start(
          `target helper ${i}`,
          this.helperCommand([`${dstDir}/passt.socket.repair`]),
          `${dstDir}/helper-target.log`,
          { env },
        ),
      );
    }
    const acceptedBefore = parsePasstLog(await src.passtLog.read()).helpersAccepted;
    if (withHelper) {
      helpers.push(
        start(
          `source helper ${src.index}`,
          this.helperCommand([`${src.dir}/passt.socket.repair`]),
          // a source may serve a rolled-back migration, then another
          `${src.dir}/helper-source-to-${i}.log`,
          { env },
        ),
      );
      // passt waits only 10 ms for a helper once migrating: both must be connected before
      await until(
        `passt ${i} (target) to accept its helper`,
        30000,
        async () => parsePasstLog(await dst.passtLog.read()).helpersAccepted > 0,
      );
      await until(
        `passt ${src.index} (source) to accept its helper`,
        30000,
        async () => parsePasstLog(await src.passtLog.read()).helpersAccepted > acceptedBefore,
      );
    }
    return { dst, helpers };
  }

  /** Waits for each helper to exit: their exit codes, and problems if any did not exit 0 */
  async helperExits(helpers: Started[], problems: string[]): Promise<string[]> {
    const codes: string[] = [];
    for (const h of helpers) {
      const s = await waitExit(h, 15000);
      if (!s) {
        await stop(h);
        problems.push(`${h.name} did not exit`);
      } else if (s.code !== 0) {
        problems.push(`${h.name} exited ${s.code}`);
      }
      codes.push(`${s?.code ?? "-"}`);
    }
    return codes;
  }

  /** Issue 14's variants: each helper must say it holds input as the variant expects */
  async checkHold(helpers: Started[], problems: string[]): Promise<void> {
    const want = expectedHold(this.v);
    if (want === null) return;
    for (const h of helpers) {
      const got = parseHelperLog(await Deno.readTextFile(h.log)).hold;
      if (got !== want) {
        problems.push(`${h.name}: input hold ${got ?? "not reported"}, not ${want} (see ${h.log})`);
      }
    }
  }

  /** The strace -e arguments attached to the source passt for this migration, or none */
  straceArgs(): string[] {
    if (this.v.forced === "race") {
      // Per flow passt reads SIOCOUTQ, SIOCOUTQNSD, then SIOCINQ (FIONREAD):
      // every third ioctl from the third is a receive-queue read. 20 ms at
      // 1 connection (REAL-PASST-NOTES); 10 ms each at more, so that 300
      // flows add 3 s, not 6
      const delay = this.conns === 1 ? 20000 : 10000;
      return ["-e", "trace=ioctl", "-e", `inject=ioctl:delay_exit=${delay}:when=3+3`];
    }
    return SOURCE_STRACE ? ["-e", SOURCE_STRACE] : [];
  }

  /** One migration from `src` to a new node; returns the new node and the record */
  async migrate(src: Node, hop: number): Promise<{ dst: Node; record: MigrationRecord }> {
    const { dst, helpers } = await this.prepareMigration(src);
    const dstDir = dst.dir;
    const withHelper = this.v.helper !== "none";

    const before = await this.streams(src);
    const guestBefore = before.guest.last!;
    const serverBefore = before.server.last!;

    // On one host, source and target share the server's network namespace.
    // passt 0.0~git20250503 closes the source socket before the target makes
    // its own, and so does 0.0~git20261002 with --migrate-no-linger (which it
    // needs here): a server segment in between gets a RST from the kernel,
    // with Debian's C helper as with ours (measured: 2 chains of 6 broke at
    // hop 1 or 2 without this). Drop those RSTs during the migration only
    // (CRIU's network lock), and count them; a reset that reaches either end
    // still fails the migration.
    const lock = true;
    if (lock) {
      await this.nft(
        `table inet pr_e2e {\n chain out {\n  type filter hook output priority 0; policy accept;\n` +
          `  tcp dport ${this.port} tcp flags & rst == rst counter drop\n }\n}\n`,
      );
    }
    const straceArgs = this.straceArgs();
    const straceOut = `${src.dir}/strace-to-${dst.index}.out`;
    const strace = straceArgs.length ? await this.attachStrace(src, straceArgs, straceOut) : null;

    const t0 = performance.now();
    await src.qmp!.execute("migrate", { uri: `unix:${dstDir}/migration.sock` });
    const status = await until("the migration to end", 120000, async () => {
      const r = (await src.qmp!.execute("query-migrate")) as { status?: string };
      return r.status === "completed" || r.status === "failed" || r.status === "cancelled"
        ? r.status
        : null;
    });
    const migrationMs = performance.now() - t0;
    let rstDropped = 0;
    if (lock) {
      rstDropped = await this.nftCount();
      await this.nft("delete table inet pr_e2e\n");
    }
    if (strace) await stop(strace);

    // The source is done: QEMU quits, passt exits by itself (--migrate-exit
    // for the newer one); whatever is left is stopped by pid
    try {
      await src.qmp!.execute("quit");
    } catch { /* QEMU may close the socket before replying */ }
    src.qmp!.close();
    src.qmp = null;
    if (!(await waitExit(src.qemu, 10000))) await stop(src.qemu);
    if (!(await waitExit(src.passt, 5000))) await stop(src.passt);

    const problems: string[] = [];
    if (status !== "completed") problems.push(`QEMU migration ${status}`);
    const codes = await this.helperExits(helpers, problems);
    await this.checkHold(helpers, problems);
    let forcing = "";
    if (this.v.forced === "race") {
      // Without a delayed receive-queue read the race was not forced: a
      // hold-on pass would prove nothing
      const reads = parseStraceTampering(await readOr(straceOut))
        .delayed.filter((c) => c === "ioctl FIONREAD").length;
      if (reads === 0) {
        problems.push("strace delayed no receive-queue read: the race was not forced");
      }
      forcing = `, ${reads} queue read${reads === 1 ? "" : "s"} delayed`;
    }
    const srcLog = parsePasstLog(await src.passtLog.read());
    const dstLog = parsePasstLog(await dst.passtLog.read());
    const onMs = srcLog.onMs;
    const restoreMs = dstLog.restoreMs;
    const record = (outcome: MigrationRecord["outcome"], detail: string): MigrationRecord => ({
      hop,
      outcome,
      detail,
      onMs,
      restoreMs,
    });

    if (!withHelper) {
      // The negative control: without a helper every connection must be lost
      const after = await this.settle(dst);
      const lost = srcLog.noHelper.length + srcLog.resets.length + dstLog.resets.length +
        after.guest.errors.length + after.server.errors.length;
      const detail = `no helper: ${srcLog.noHelper.length} refused accept, ` +
        `${srcLog.resets.length + dstLog.resets.length} passt resets, ` +
        `${after.guest.errors.length} guest and ${after.server.errors.length} server errors`;
      return {
        dst,
        record: record(
          lost > 0 ? "expected-failure" : "failed",
          lost > 0 ? detail : `the control kept its connections: ${detail}`,
        ),
      };
    }

    const flows = guestBefore.conns;
    if (srcLog.sent !== flows) {
      problems.push(`source passt sent ${srcLog.sent} flows, not ${flows}`);
    }
    if (dstLog.received !== flows) {
      problems.push(`target passt received ${dstLog.received} flows, not ${flows}`);
    }
    for (const r of [...srcLog.resets, ...dstLog.resets]) problems.push(`passt: ${r}`);

    const timing =
      `${(migrationMs / 1000).toFixed(1)} s, ON ${onMs ?? "-"} ms, restore ${restoreMs ?? "-"} ms` +
      (lock ? `, ${rstDropped} RST dropped` : "") + forcing + `, helpers exit ${codes.join("/")}`;
    // Every connection must move data both ways after the migration: each
    // end reads past the most any connection had read before it
    let after: { guest: StreamReport; server: StreamReport } | null = null;
    try {
      after = await this.waitStreams(
        dst,
        "both ends to stream past the migration",
        90000,
        (g, s) => {
          // The target's console holds only what the guest printed after the switch
          if (g.errors.length > 0 || s.errors.length > before.server.errors.length) return true;
          return !!g.last && !!s.last && g.last.conns === this.conns &&
            s.last.conns >= this.conns &&
            g.last.rxMin > guestBefore.rxMax + PROGRESS * CHUNK &&
            s.last.rxMin > serverBefore.rxMax + PROGRESS * CHUNK;
        },
      );
    } catch (e) {
      problems.push(e instanceof Error ? e.message : String(e));
      if (this.v.noHold && problems.length === 1) {
        // The negative control's other way to lose bytes: host to guest
        // stalls for good while guest to host goes on (stalledHostToGuest)
        const last = await this.streams(dst);
        const guestMark = guestBefore.rxMax + PROGRESS * CHUNK;
        const serverMark = serverBefore.rxMax + PROGRESS * CHUNK;
        const server = {
          ...last.server,
          errors: last.server.errors.slice(before.server.errors.length),
        };
        if (stalledHostToGuest(guestMark, serverMark, last.guest, server)) {
          return {
            dst,
            record: record(
              "expected-failure",
              `bytes lost without the hold, seen as a stall: host to guest stopped at ` +
                `${last.guest.last!.rxMin} bytes read (needed ${guestMark + 1}), guest to ` +
                `host went on to ${server.last!.rxMin} (${timing})`,
            ),
          };
        }
      }
    }
    if (after && after.server.errors.length > before.server.errors.length) {
      // The server reads the guest's close at once; the guest's own line
      // (why it closed) comes through the serial console a little later
      const want = after.server.errors.length - before.server.errors.length;
      try {
        after = await this.waitStreams(
          dst,
          "the guest's side of the error",
          10000,
          (g) => g.errors.length >= want,
        );
      } catch { /* judged on what there is */ }
    }
    // Errors the guest printed on the source's console before the switch count too
    const late = parseStream(await src.serial.read()).errors.slice(before.guest.errors.length);
    const guestErrors = [...late, ...(after ? after.guest.errors : [])];
    const serverErrors = after ? after.server.errors.slice(before.server.errors.length) : [];

    if (guestErrors.length || serverErrors.length) {
      const race = this.isPasstRace(srcLog, guestErrors, serverErrors);
      const lines = [
        ...guestErrors.map((e) => `guest ${e.line}`),
        ...serverErrors.map((e) => `server ${e.line}`),
      ];
      if (this.v.noHold && problems.length === 0 && lostHostToGuest(guestErrors, serverErrors)) {
        // The negative control: the forced race lost bytes without the hold.
        // passt's log marks it only where the dumped queue was not empty
        // (passt_log.ts); a segment that lands on an empty queue leaves the
        // same numbers as none, so the loss itself is the control's proof.
        const how = race
          ? `passt's race (${race})`
          : "passt's log marks none of them (a segment landing on an empty dumped queue leaves no mark)";
        return {
          dst,
          record: record(
            "expected-failure",
            `bytes lost without the hold, ${how}; ${lines.join("; ")} (${timing})`,
          ),
        };
      }
      if (race && this.v.forced === "race") {
        // With the hold nothing can land in repair mode: the race is a failure
        problems.push(`passt's race despite the hold (${race})`);
      } else if (race && problems.length === 0) {
        // The guest reopens a broken connection: wait for all N again
        await this.waitStreams(
          dst,
          "the guest to reopen its connections",
          60000,
          (g, s) =>
            !!g.last && !!s.last && g.last.conns === this.conns && s.last.conns >= this.conns,
        );
        return { dst, record: record("race", `passt's race (${race}); ${lines.join("; ")}`) };
      }
      problems.push(...lines);
    }
    if (problems.length) {
      return { dst, record: record("failed", `${problems.join("; ")} (${timing})`) };
    }
    return { dst, record: record("kept", timing) };
  }

  /**
   * A migration made to fail after the source's ON (the first flow's write
   * to the migration channel fails): passt rolls back, turning repair mode
   * off, and the VM goes on where it was. Every connection must then carry
   * data both ways on the source (a socket left held would drop the server's
   * segments), and the source helper must have seen ON then OFF and exited 0.
   * Returns the source node: the chain goes on from it.
   */
  async rollback(src: Node, hop: number): Promise<{ dst: Node; record: MigrationRecord }> {
    const { dst, helpers } = await this.prepareMigration(src);
    const before = await this.streams(src);
    const guestBefore = before.guest.last!;
    const serverBefore = before.server.last!;
    const srcText = await src.passtLog.read();
    // passt 0.0~git20250503 writes to the migration channel (a pipe) a
    // header, the observed addresses, the flow count, then each flow: the
    // 4th write is the first flow's, and when it fails passt rolls back
    // (turns repair mode off and stays); a later failure makes it exit
    const failer = await this.attachTracer(src, "fail_write", [FAIL_WRITE.path, "4"]);

    // The server pauses until QEMU has restarted the device: passt
    // 0.0~git20250503 dies if host data waits for the guest when QEMU
    // restarts the device after a failed migration (it gets a ring's kick
    // before its call eventfd, and notifies through the closed one: its own
    // bug, seen in 3 rollbacks of 6 with the server sending every 100 ms).
    // The traffic after the rollback still proves the hold released.
    await suspend(this.server!, true);
    let status: string;
    try {
      // No RST lock: the source keeps its sockets, and any reset must show
      await src.qmp!.execute("migrate", { uri: `unix:${dst.dir}/migration.sock` });
      status = await until("the migration to end", 120000, async () => {
        const r = (await src.qmp!.execute("query-migrate")) as { status?: string };
        return r.status === "completed" || r.status === "failed" || r.status === "cancelled"
          ? r.status
          : null;
      });
      // Restarted: the second ring has its call eventfd again
      try {
        await until("QEMU to restart passt's rings", 10000, async () => {
          const text = (await src.passtLog.read()).slice(srcText.length);
          return /Got call_fd: \d+ for vq: 1/.test(text);
        });
      } catch { /* the streams below tell */ }
    } finally {
      await suspend(this.server!, false);
    }
    await stop(failer);
    // The target's QEMU gave up on an incomplete stream; its passt waits
    if (!(await waitExit(dst.qemu, 10000))) await stop(dst.qemu);
    dst.qmp?.close();
    dst.qmp = null;
    await stop(dst.passt);

    // What the helpers and passt did (the rollback itself), then what the
    // connections did after it
    const problems: string[] = [];
    if (status !== "failed") problems.push(`QEMU migration ${status}, not failed`);
    const codes = await this.helperExits(helpers, problems);
    await this.checkHold(helpers, problems);
    const failed = /^write \d+ to a pipe .* failed with EPIPE$/m.exec(await readOr(failer.log));
    if (!failed) problems.push(`no write to the migration channel failed: see ${failer.log}`);
    const srcLog = parsePasstLog((await src.passtLog.read()).slice(srcText.length));
    if (srcLog.rollbacks === 0) problems.push("the source passt did not roll back");
    for (const r of srcLog.resets) problems.push(`passt: ${r}`);
    const flows = guestBefore.conns;
    const source = helpers.find((h) => h.name.startsWith("source"));
    const helperLog = parseHelperLog(source ? await readOr(source.log) : "");
    const on = helperLog.commands.filter((c) => c.name === "ON");
    const off = helperLog.commands.filter((c) => c.name === "OFF");
    const count = (cs: typeof on) => cs.reduce((n, c) => n + c.sockets, 0);
    const seen = helperLog.commands.map((c) => `${c.name} ${c.sockets}`).join(", ");
    if (
      helperLog.commands[0]?.name !== "ON" || count(on) !== flows || count(off) !== flows ||
      on.length + off.length !== helperLog.commands.length
    ) {
      problems.push(`source helper saw ${seen || "no command"}, not ON then OFF for ${flows}`);
    }

    const rollbackProblems = problems.length;

    // The VM stayed: every connection carries data both ways past the rollback
    let after: { guest: StreamReport; server: StreamReport } | null = null;
    try {
      after = await this.waitStreams(
        src,
        "both ends to stream past the rollback",
        90000,
        (g, s) =>
          g.errors.length > before.guest.errors.length ||
          s.errors.length > before.server.errors.length ||
          (!!g.last && !!s.last && g.last.conns === this.conns && s.last.conns >= this.conns &&
            g.last.rxMin > guestBefore.rxMax + PROGRESS * CHUNK &&
            s.last.rxMin > serverBefore.rxMax + PROGRESS * CHUNK),
      );
    } catch (e) {
      problems.push(e instanceof Error ? e.message : String(e));
    }
    if (after) {
      for (const e of after.guest.errors.slice(before.guest.errors.length)) {
        problems.push(`guest ${e.line}`);
      }
      for (const e of after.server.errors.slice(before.server.errors.length)) {
        problems.push(`server ${e.line}`);
      }
    }
    const detail = `QEMU migration ${status}, ${failed ? failed[0] : "no write failed"}, ` +
      `passt rolled back ${srcLog.rollbacks} time${srcLog.rollbacks === 1 ? "" : "s"}, ` +
      `source helper: ${seen || "no command"}, helpers exit ${codes.join("/")}`;
    // passt 0.0~git20250503 can die after a correct rollback: when QEMU
    // restarts the device it sends a ring's kick before its call eventfd,
    // and a host segment that came while the VM was stopped (before ON, so
    // not held) makes passt notify the guest through the closed one. Its
    // own bug, not the helper's: the variant is repeated on a fresh VM.
    const died = parsePasstLog(await src.passtLog.read()).fatal;
    const passtDied = problems.length > rollbackProblems && rollbackProblems === 0 &&
      died.length > 0;
    const record: MigrationRecord = {
      hop,
      outcome: passtDied ? "passt-died" : problems.length ? "failed" : "rolled-back",
      detail: passtDied
        ? `passt died after the rollback (${died.join("; ")}); ${problems.join("; ")} (${detail})`
        : problems.length
        ? `${problems.join("; ")} (${detail})`
        : detail,
      onMs: srcLog.onMs,
      restoreMs: null,
    };
    return { dst: src, record };
  }

  /**
   * passt's race: bytes lost host-to-guest only, on connections whose dumped
   * receive queue ends two segments past snd_wl1 (see passt_log.ts)
   */
  isPasstRace(
    log: PasstMigrationLog,
    guest: StreamReport["errors"],
    server: StreamReport["errors"],
  ): string | null {
    const racy = raceFlows(log, CHUNK);
    if (racy.length === 0) return null;
    if (!lostHostToGuest(guest, server)) return null;
    const ports = new Set(racy.map((d) => d.guestPort));
    if (!guest.every((e) => e.port === null || ports.has(e.port))) return null;
    return racy.map((d) =>
      `flow ${d.flow} port ${d.guestPort} queue ends ${
        d.receiveSeq + d.receiveQueue - d.sndWl1
      } bytes past snd_wl1`
    ).join(", ");
  }

  async settle(node: Node): Promise<{ guest: StreamReport; server: StreamReport }> {
    try {
      return await this.waitStreams(
        node,
        "errors after the control",
        30000,
        (g, s) => g.errors.length > 0 || s.errors.length > 0,
      );
    } catch {
      return await this.streams(node);
    }
  }

  /** Issue 14's hook: strace from the tree, attached to the source passt before migrating */
  async attachStrace(src: Node, args: string[], out: string): Promise<Started> {
    const pid = (await Deno.readTextFile(`${src.dir}/passt.pid`)).trim();
    const s = start(
      "strace",
      this.inTree(["/usr/bin/strace", "-p", pid, "-o", out, ...args], false),
      `${out}.log`,
    );
    const log = new Tail(s.log);
    await until("strace to attach", 10000, async () => (await log.read()).includes("attached"));
    return s;
  }

  /** Issue 14's rollback: `argv` with the source passt's pid, once it says it is attached */
  async attachTracer(src: Node, name: string, argv: string[]): Promise<Started> {
    const pid = (await Deno.readTextFile(`${src.dir}/passt.pid`)).trim();
    const [program, ...args] = argv;
    const t = start(name, [program!, pid, ...args], `${src.dir}/${name}-${this.nextIndex - 1}.log`);
    const log = new Tail(t.log);
    await until(`${name} to attach`, 10000, async () => {
      if (t.status) throw new Failure(`${name} exited: ${await log.read()}`);
      return (await log.read()).includes("attached");
    });
    return t;
  }

  async runChain(wanted: number, say: (line: string) => void): Promise<VariantResult> {
    const result: VariantResult = {
      name: this.v.name,
      helper: this.v.helper,
      passt: this.v.passt,
      conns: this.conns,
      wanted,
      migrations: this.records,
      passed: false,
      reason: "",
      forced: this.v.forced !== undefined,
    };
    try {
      await this.setUp();
      if (this.unprivileged) await this.prepareUserProgram();
      await until(
        "the server to listen",
        10000,
        async () => (await this.serverLog.read()).includes("LISTENING"),
      );
      let node = await this.startNode(0, false);
      const t0 = performance.now();
      await this.waitStreams(
        node,
        `the guest to boot and open ${this.conns} connections`,
        180000,
        (g, s) =>
          !!g.last && !!s.last && g.last.conns === this.conns && s.last.conns === this.conns &&
          g.last.rxMin > 0 && s.last.rxMin > 0 && g.errors.length === 0,
      );
      say(
        `  ${this.v.name} (${this.conns}): guest up and streaming in ${
          ((performance.now() - t0) / 1000).toFixed(1)
        } s`,
      );
      let kept = 0;
      let retries = 0;
      let hop = 0;
      while (kept < wanted) {
        hop++;
        const from = node.index;
        const to = this.nextIndex;
        const { dst, record } = this.v.forced === "rollback" && hop === 1
          ? await this.rollback(node, hop)
          : await this.migrate(node, hop);
        this.records.push(record);
        node = dst;
        say(
          `  ${this.v.name} (${this.conns}) migration ${from} -> ${to}: ${record.outcome} ${record.detail}`,
        );
        if (record.outcome === "expected-failure") {
          result.passed = true;
          return result;
        }
        if (record.outcome === "failed") {
          result.reason = `migration ${from} -> ${to} failed`;
          return result;
        }
        if (record.outcome === "passt-died") {
          result.reason = `passt died after the rollback ${from} -> ${to}`;
          return result;
        }
        if (record.outcome === "race") {
          if (++retries > RETRIES) {
            result.reason = `passt's race more than ${RETRIES} times for one migration`;
            return result;
          }
          continue;
        }
        retries = 0;
        kept++;
      }
      result.passed = !isControl(this.v);
      if (!result.passed) {
        result.reason = `the negative control did not fail (${this.records.length} migration${
          this.records.length === 1 ? "" : "s"
        } kept every byte)`;
      }
      return result;
    } catch (e) {
      result.reason = e instanceof Error ? e.message : String(e);
      return result;
    } finally {
      await this.tearDown();
    }
  }
}

// ---------------------------------------------------------------- the run

async function main(): Promise<number> {
  const e = await readEnv();
  const variants = chosenVariants();
  const runDir = await Deno.makeTempDir({ prefix: "passt-repair-e2e-" });
  await Deno.chmod(runDir, 0o755);
  const say = (line: string) => console.log(line);
  say(
    `e2e: passt ${e.passtVersion["2025"]} and ${e.passtVersion["2026"]}, QEMU ${e.qemuVersion}; ` +
      `variants ${variants.map((v) => v.name).join(", ")}; ${CONNS.join(" and ")} connections; ` +
      `${MIGRATIONS} migrations each; run folder ${runDir}`,
  );
  if (variants.some((v) => v.forced === "rollback")) {
    FAIL_WRITE.path = `${runDir}/fail_write`;
    await run([
      "gcc",
      "-O2",
      "-Wall",
      "-Wextra",
      "-Werror",
      "-o",
      FAIL_WRITE.path,
      `${HERE}host/fail_write.c`,
    ]);
  }
  const results: VariantResult[] = [];
  let seq = 0;
  const stopSignal = async () => {
    await stopAll();
    for (const ns of namespaces) await run(["ip", "netns", "del", ns], { allowFailure: true });
    say(`e2e: interrupted; run folder kept: ${runDir}`);
    Deno.exit(130);
  };
  Deno.addSignalListener("SIGINT", stopSignal);
  Deno.addSignalListener("SIGTERM", stopSignal);
  const t0 = performance.now();
  for (const conns of CONNS) {
    for (const v of variants) {
      // The negative controls and the rollback need one connection count
      if ((isControl(v) || v.forced === "rollback") && conns !== CONNS[0]) continue;
      let r = await new Chain(e, v, conns, runDir, seq++).runChain(migrationsFor(v), say);
      // passt's own death after a rollback (see Chain.rollback): a fresh VM, at most twice
      for (let again = 0; again < RETRIES && !r.passed && isPasstDeath(r); again++) {
        say(`  ${v.name} (${conns}): passt died after its rollback; again on a fresh VM`);
        const next = await new Chain(e, v, conns, runDir, seq++, again + 1).runChain(
          migrationsFor(v),
          say,
        );
        r = { ...next, migrations: [...r.migrations, ...next.migrations] };
      }
      results.push(r);
      say(variantLine(r));
    }
  }
  say("");
  say("Medians from passt's own log (a figure, not a test; the machine is shared):");
  for (const line of timingTable(results)) say(line);
  say("");
  for (const r of results) say(variantLine(r));
  const failed = results.some((r) => !r.passed);
  say(`e2e: took ${((performance.now() - t0) / 1000).toFixed(0)} s`);
  if (failed || Deno.env.get("PASST_REPAIR_E2E_KEEP")) {
    say(`e2e: run folder kept with every log: ${runDir}`);
  } else {
    await Deno.remove(runDir, { recursive: true });
  }
  say(countLine(results));
  return failed || results.length === 0 ? 1 : 0;
}

if (import.meta.main) Deno.exit(await main());
