// What the VS Code settings mean to the server and to the process that runs it. No `vscode` import
// here, so the unit tests run under plain node.

/** The server's settings keys (lsp_server/settings.py); `spectab.<key>` in VS Code. */
export const SERVER_KEYS = [
  "profile", "target", "draft", "device", "dtype", "quant", "threads", "fim", "maxNewTokens",
  "temperature", "debounceMs", "deadlineMs", "multiline", "contextTokens", "languages",
  "engine", "engineApi", "engineModel", "engineApiKeyEnv", "kvLanes", "idleMinutes",
  "extraContextTokens", "minConfidence", "candidates", "draftFim",
] as const;

export type ServerSettings = Record<(typeof SERVER_KEYS)[number], unknown>;

/** Reads one `spectab.*` value (a WorkspaceConfiguration's `get`, or a plain object in tests). */
export type Getter = (key: string) => unknown;

/** The section the server gets as initializationOptions and in didChangeConfiguration. */
export function serverSettings(get: Getter): ServerSettings {
  const out = {} as ServerSettings;
  for (const key of SERVER_KEYS) {
    let value = get(key);
    // VS Code has no "unset" for a string setting; an empty one means "the profile's model",
    // which the server spells null (a value it also accepts to go back from an override)
    if ((key === "target" || key === "draft") && (value === undefined || value === null || String(value).trim() === "")) {
      value = null;
    }
    if (value !== undefined) {
      out[key] = value;
    }
  }
  return out;
}

export interface ServerCommand {
  command: string;
  args: string[];
  /** how to tell the user what was run */
  display: string;
}

/** `<python> -m spectab serve` when spectab.server.python is set, else spectab.server.command with its args. */
export function serverCommand(get: Getter): ServerCommand {
  const python = String(get("server.python") ?? "").trim();
  const rawArgs = get("server.args");
  const args = Array.isArray(rawArgs) ? rawArgs.map(String) : ["serve"];
  if (python) {
    const full = ["-m", "spectab", ...args];
    return { command: python, args: full, display: [python, ...full].join(" ") };
  }
  const command = String(get("server.command") ?? "").trim() || "spectab";
  return { command, args, display: [command, ...args].join(" ") };
}

/** Changing one of these needs a new server process; the rest reach the running one. */
export function needsRestart(affects: (section: string) => boolean): boolean {
  return ["spectab.server.command", "spectab.server.args", "spectab.server.python"].some(affects);
}

/** The user-facing explanation for a server that could not be started. */
export function startFailureMessage(cmd: ServerCommand, reason: string, usingPython: boolean): string {
  const fix = usingPython
    ? `Check that spectab.server.python points at a Python with spectab installed (\`${cmd.command} -m pip install <spectab checkout>\`).`
    : `Install spectab (\`pip install <spectab checkout>\` into a virtual environment) and set spectab.server.command ` +
      `to its full path (e.g. ~/.venv/bin/spectab), or set spectab.server.python to that environment's python.`;
  return `spectab: could not start the server (\`${cmd.display}\`): ${reason}. ${fix}`;
}
