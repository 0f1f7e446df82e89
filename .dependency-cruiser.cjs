// The import rules the layout promises, checked by `npm run lint:deps` (part of `npm test`).
// docs/architecture.md explains the layers.
/** @type {import('dependency-cruiser').IConfiguration} */
module.exports = {
  forbidden: [
    {
      name: "no-cycles",
      comment: "No import cycles anywhere, type-only imports included.",
      severity: "error",
      from: {},
      to: { circular: true },
    },
    {
      name: "honest-capture-and-rebuild",
      comment:
        "Capture and reconstruction reach the chips only through the hardware bus and the shadows: " +
        "they never import a device model or the board (the model's honesty rule).",
      severity: "error",
      from: { path: "^assembly/hypervisor/(pic|pit|apic)/|^assembly/hypervisor/device-state\\.ts$" },
      to: { path: "^assembly/(devices/|board/board\\.ts$|abi/)" },
    },
    {
      name: "devices-below-hypervisor",
      comment: "Devices and programming models know nothing of the board, the hypervisor or the ABI.",
      severity: "error",
      from: { path: "^assembly/(devices|registers|common)/" },
      to: { path: "^assembly/(board|hypervisor|abi)/" },
    },
    {
      name: "core-interface-is-the-top",
      comment: "Only the ABI folder is the wasm interface; nothing below imports it.",
      severity: "error",
      from: { path: "^assembly/", pathNot: "^assembly/abi/" },
      to: { path: "^assembly/abi/", pathNot: "^assembly/abi/codes\\.ts$" },
    },
    {
      name: "library-below-cli",
      comment: "The library (core, guest, trace, migrate) never imports the command line.",
      severity: "error",
      from: { path: "^src/(core|guest|trace|migrate)/" },
      to: { path: "^src/cli/" },
    },
    {
      name: "library-below-monitor",
      comment: "The library never imports the monitor: the engine offers a control interface (source/control.ts) and the monitor uses it.",
      severity: "error",
      from: { path: "^src/(core|guest|trace|migrate)/" },
      to: { path: "^src/monitor/" },
    },
    {
      name: "no-tests-in-the-product",
      severity: "error",
      from: { path: "^(src|assembly|bench)/" },
      to: { path: "^test/" },
    },
  ],
  options: {
    doNotFollow: { path: "node_modules" },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: "tsconfig.json" },
    enhancedResolveOptions: { extensions: [".ts", ".js", ".mjs"] },
  },
};
