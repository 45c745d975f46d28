import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import * as readline from "readline";
import * as vscode from "vscode";
import {
  CloseAction,
  DidChangeConfigurationNotification,
  ErrorAction,
  ErrorHandler,
  ExecuteCommandRequest,
  LanguageClient,
  LanguageClientOptions,
  RevealOutputChannelOn,
  ServerOptions,
  TransportKind,
} from "vscode-languageclient/node";
import { handlesLanguage, partialAcceptArgs, ShownSuggestions, stepOutcome } from "./partial";
import { needsRestart, serverCommand, serverSettings, startFailureMessage } from "./settings";
import { formatStatus, ServerStatus, stderrLevel } from "./status";

const STATUS_METHOD = "spectab/status";
const ACCEPTED_COMMAND = "spectab.accepted";
/** the keybindings' `when`: the active editor's language is one spectab completes in */
const HANDLES_CONTEXT = "spectab.handlesLanguage";
const POLL_MS = 3000;

/** Our own start-failure message says what to do; the client's generic one would only repeat it. */
class SpectabClient extends LanguageClient {
  starting = true;
  override error(message: string, data?: unknown, showNotification: boolean | "force" = "force"): void {
    super.error(message, data, this.starting ? false : showNotification);
  }
}

let client: SpectabClient | undefined;
let output: vscode.LogOutputChannel;
let item: vscode.StatusBarItem;
let timer: NodeJS.Timeout | undefined;
let lastStatus: ServerStatus | undefined;
const shown = new ShownSuggestions();

function pipeLines(input: NodeJS.ReadableStream, channel: vscode.LogOutputChannel): void {
  readline.createInterface({ input, crlfDelay: Infinity, terminal: false }).on("line", (line) => channel[stderrLevel(line)](line));
}

const config = () => vscode.workspace.getConfiguration("spectab");
const get = (key: string) => config().get(key);
const enabled = () => config().get<boolean>("enable") !== false;

export async function activate(context: vscode.ExtensionContext): Promise<void> {
  output = vscode.window.createOutputChannel("spectab", { log: true });
  item = vscode.window.createStatusBarItem("spectab.status", vscode.StatusBarAlignment.Right, 100);
  item.name = "spectab";
  item.command = "spectab.showMenu";
  item.show();
  context.subscriptions.push(
    output,
    item,
    vscode.commands.registerCommand("spectab.restartServer", restart),
    vscode.commands.registerCommand("spectab.showLog", () => output.show(true)),
    vscode.commands.registerCommand("spectab.toggleCompletions", toggle),
    vscode.commands.registerCommand("spectab.showMenu", menu),
    vscode.commands.registerCommand("spectab.acceptNextWord", () => acceptNext("editor.action.inlineSuggest.acceptNextWord")),
    vscode.commands.registerCommand("spectab.acceptNextLine", () => acceptNext("editor.action.inlineSuggest.acceptNextLine")),
    vscode.workspace.onDidChangeConfiguration(onConfigurationChanged),
    vscode.window.onDidChangeActiveTextEditor(updateContext),
    // a language mode change reopens the document under its new languageId
    vscode.workspace.onDidOpenTextDocument(updateContext),
    vscode.workspace.onDidCloseTextDocument((doc) => shown.forget(doc.uri.toString())),
    { dispose: () => timer && clearInterval(timer) },
  );
  timer = setInterval(() => void refresh(), POLL_MS);
  updateContext();
  await start();
}

export async function deactivate(): Promise<void> {
  if (timer) {
    clearInterval(timer);
  }
  await stop();
}

function which(command: string): string | undefined {
  const expanded = command.startsWith("~/") ? path.join(os.homedir(), command.slice(2)) : command;
  const candidates = expanded.includes(path.sep) || path.isAbsolute(expanded)
    ? [expanded]
    : (process.env.PATH ?? "").split(path.delimiter).filter(Boolean).map((dir) => path.join(dir, expanded));
  return candidates.find((file) => {
    try {
      fs.accessSync(file, fs.constants.X_OK);
      return fs.statSync(file).isFile();
    } catch {
      return false;
    }
  });
}

function startFailed(reason: string): void {
  const cmd = serverCommand(get);
  const message = startFailureMessage(cmd, reason, Boolean(String(get("server.python") ?? "").trim()));
  output.error(message);
  render();
  void vscode.window.showErrorMessage(message, "Open Settings", "Show Log").then((choice) => {
    if (choice === "Open Settings") {
      void vscode.commands.executeCommand("workbench.action.openSettings", "spectab.server");
    } else if (choice === "Show Log") {
      output.show(true);
    }
  });
}

/** Restart a crashed server a few times, as the default handler does, but never one that failed to start. */
function errorHandler(): ErrorHandler {
  const crashes: number[] = [];
  return {
    error: (_error, _message, count) => ({ action: (count ?? 0) <= 3 ? ErrorAction.Continue : ErrorAction.Shutdown }),
    closed: () => {
      if (client?.starting) {
        return { action: CloseAction.DoNotRestart, handled: true };
      }
      crashes.push(Date.now());
      while (crashes.length && crashes[0] < Date.now() - 3 * 60_000) {
        crashes.shift();
      }
      if (crashes.length <= 4) {
        return { action: CloseAction.Restart };
      }
      return {
        action: CloseAction.DoNotRestart,
        message: "spectab: the server crashed 5 times in 3 minutes and was not restarted; see spectab: Show Server Log, then spectab: Restart Server.",
      };
    },
  };
}

async function start(): Promise<void> {
  const cmd = serverCommand(get);
  const program = which(cmd.command);
  if (!program) {
    startFailed(`${cmd.command} was not found${cmd.command.includes("/") ? "" : " on PATH"}`);
    return;
  }
  output.info(`starting ${cmd.display} (${program})`);
  const serverOptions: ServerOptions = {
    command: program,
    args: cmd.args,
    transport: TransportKind.stdio, // the client appends --stdio, which `spectab serve` accepts
    options: { env: process.env },
  };
  const clientOptions: LanguageClientOptions = {
    // every language: the server's own `languages` setting filters, and can change without a restart
    documentSelector: [{ scheme: "file" }, { scheme: "untitled" }],
    outputChannel: output,
    stdioOptions: { stdout: pipeLines, stderr: pipeLines },
    revealOutputChannelOn: RevealOutputChannelOn.Never,
    initializationOptions: serverSettings(get),
    errorHandler: errorHandler(),
    middleware: {
      // every item goes through (the server's candidates, for Alt+] / Alt+[); each is remembered
      // so a word or line step can tell a partial accept from a whole one
      provideInlineCompletionItems: async (document, position, context, token, next) => {
        if (!enabled()) {
          return undefined;
        }
        const answer = await next(document, position, context, token);
        const items = Array.isArray(answer) ? answer : answer?.items ?? [];
        shown.add(document.uri.toString(), items.flatMap((it) => typeof it.insertText === "string"
          ? [{ start: document.offsetAt(it.range?.start ?? position), text: it.insertText }] : []));
        return answer;
      },
      // VS Code shows the inline item; a completion request would only supersede it in the server
      // (the newest request per document wins) and duplicate it in the suggest widget
      provideCompletionItem: () => undefined,
      workspace: {
        // the server may pull its section (didChangeConfiguration with null settings): answer
        // with the server's keys, not VS Code's nested `server.*` and `enable`
        configuration: async (params, token, next) => {
          const answer = await next(params, token);
          if (!Array.isArray(answer)) {
            return answer;
          }
          return answer.map((value, i) => (params.items[i].section === "spectab" ? serverSettings(get) : value));
        },
      },
    },
  };
  const created = new SpectabClient("spectab", "spectab", serverOptions, clientOptions);
  client = created;
  render();
  try {
    await created.start();
    created.starting = false;
  } catch (err) {
    if (client === created) {
      client = undefined;
    }
    startFailed(`the server exited before it answered (${err instanceof Error ? err.message : String(err)}); its output is in the spectab log`);
    return;
  }
  void refresh();
}

async function stop(): Promise<void> {
  const old = client;
  client = undefined;
  lastStatus = undefined;
  if (old) {
    try {
      await old.stop(3000);
    } catch (err) {
      output.warn(`stopping the server: ${err instanceof Error ? err.message : String(err)}`);
    }
  }
}

async function restart(): Promise<void> {
  await stop();
  await start();
}

/** Runs VS Code's own partial accept, then tells the server how many characters it took, unless
 * the step took the whole rest: VS Code then accepts the item, whose own command tells the server. */
async function acceptNext(builtin: string): Promise<void> {
  const editor = vscode.window.activeTextEditor;
  const before = editor && { doc: editor.document, version: editor.document.version, offset: editor.document.offsetAt(editor.selection.active) };
  await vscode.commands.executeCommand(builtin);
  const current = client;
  if (!editor || !before || before.doc.version === before.version || !current?.isRunning()) {
    return;
  }
  const { doc } = before;
  const after = doc.offsetAt(editor.selection.active);
  const step = stepOutcome(shown.get(doc.uri.toString()), (a, b) => doc.getText(new vscode.Range(doc.positionAt(a), doc.positionAt(b))),
    before.offset, after);
  if (step.kind !== "partial") {
    return;
  }
  const args = partialAcceptArgs(current.code2ProtocolConverter.asUri(doc.uri), step.chars);
  current.sendRequest(ExecuteCommandRequest.type, { command: ACCEPTED_COMMAND, arguments: args })
    .then(undefined, (err) => output.warn(`${ACCEPTED_COMMAND} (partial): ${err instanceof Error ? err.message : String(err)}`));
}

/** Sets the keybindings' context key for the active editor. */
function updateContext(): void {
  const doc = vscode.window.activeTextEditor?.document;
  const handles = Boolean(doc) && enabled() && ["file", "untitled"].includes(doc!.uri.scheme) && handlesLanguage(get("languages"), doc!.languageId);
  void vscode.commands.executeCommand("setContext", HANDLES_CONTEXT, handles);
}

function onConfigurationChanged(event: vscode.ConfigurationChangeEvent): void {
  if (!event.affectsConfiguration("spectab")) {
    return;
  }
  updateContext();
  if (needsRestart((section) => event.affectsConfiguration(section))) {
    void restart();
    return;
  }
  if (client?.isRunning()) {
    // pushed, in the server's key names; the server reloads the model only when a model key changed
    void client.sendNotification(DidChangeConfigurationNotification.type, { settings: { spectab: serverSettings(get) } });
  }
  render();
}

async function toggle(): Promise<void> {
  const now = !enabled();
  const inspect = config().inspect<boolean>("enable");
  const target = inspect?.workspaceFolderValue !== undefined
    ? vscode.ConfigurationTarget.WorkspaceFolder
    : inspect?.workspaceValue !== undefined ? vscode.ConfigurationTarget.Workspace : vscode.ConfigurationTarget.Global;
  await config().update("enable", now, target);
  void vscode.window.showInformationMessage(`spectab inline suggestions ${now ? "on" : "off"}.`);
}

async function menu(): Promise<void> {
  const items = [
    { label: enabled() ? "$(circle-slash) Turn inline suggestions off" : "$(sparkle) Turn inline suggestions on", run: toggle },
    { label: "$(debug-restart) Restart server", run: restart },
    { label: "$(output) Show server log", run: async () => output.show(true) },
    { label: "$(gear) Settings", run: async () => void vscode.commands.executeCommand("workbench.action.openSettings", "spectab") },
  ];
  const picked = await vscode.window.showQuickPick(items, { placeHolder: item.tooltip?.toString().split("\n")[0] });
  await picked?.run();
}

async function refresh(): Promise<void> {
  const current = client;
  if (!current?.isRunning()) {
    lastStatus = undefined;
    render();
    return;
  }
  try {
    // with the active document's uri the answer says which KV lane it uses
    const doc = vscode.window.activeTextEditor?.document;
    const params = doc ? { uri: current.code2ProtocolConverter.asUri(doc.uri) } : {};
    lastStatus = await current.sendRequest<ServerStatus>(STATUS_METHOD, params);
  } catch (err) {
    if (client === current) {
      // a restart in between makes the old client's request fail: not worth a line
      output.warn(`${STATUS_METHOD}: ${err instanceof Error ? err.message : String(err)}`);
    }
    lastStatus = undefined;
  }
  render();
}

function render(): void {
  const view = formatStatus(lastStatus, enabled(), Boolean(client));
  item.text = view.text;
  item.tooltip = view.tooltip;
  item.accessibilityInformation = { label: view.tooltip.replace(/\n/g, ", ") };
  item.backgroundColor = view.severity === "ok" ? undefined : new vscode.ThemeColor(`statusBarItem.${view.severity}Background`);
}
