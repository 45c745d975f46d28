;;; spectab.el --- Inline code completion from spectab, through eglot  -*- lexical-binding: t; -*-

;; Version: 0.1.0
;; Package-Requires: ((emacs "28.1") (eglot "1.9"))
;; Keywords: convenience, languages, tools
;; URL: the spectab repository, editor-clients/emacs/

;;; Commentary:

;; spectab is a local code-completion server (`spectab serve', LSP over
;; stdio).  This file connects it to Emacs through eglot:
;;
;; - `spectab-eglot-setup' registers the server for `spectab-major-modes'
;;   in `eglot-server-programs', with the settings below as LSP
;;   initializationOptions, and turns on `spectab-mode' in the buffers
;;   eglot manages with it.
;; - `spectab-mode' asks for an inline completion
;;   (textDocument/inlineCompletion) when Emacs has been idle for
;;   `spectab-idle-delay' seconds after an edit, and shows it as ghost
;;   text at point.  TAB (`spectab-accept-keys') inserts it; TAB keeps its
;;   usual binding whenever no suggestion is shown.  M-f and C-e insert
;;   its next word or line (`spectab-accept-word', `spectab-accept-line'),
;;   M-n and M-p show the other suggestions of the answer (`spectab-next',
;;   `spectab-previous').  Any other input dismisses the suggestion,
;;   except typing its own next characters.
;; - Plain `completion-at-point' works as well: eglot asks the server for
;;   textDocument/completion, and the server answers with one item.
;; - `spectab-status' shows what the server reports about itself.
;;
;; Minimal setup:
;;
;;   (add-to-list 'load-path "/path/to/spectab/editor-clients/emacs")
;;   (require 'spectab)
;;   (spectab-eglot-setup)
;;   (add-hook 'python-mode-hook #'eglot-ensure)

;;; Code:

(require 'cl-lib)
(require 'subr-x)
(require 'eglot)
(require 'jsonrpc)

(defgroup spectab nil
  "Inline code completion from the spectab language server."
  :group 'tools
  :prefix "spectab-")

;;;; Server and settings

(defcustom spectab-server-command '("spectab" "serve")
  "Command that starts the language server: program and arguments."
  :type '(repeat string))

(defcustom spectab-major-modes
  '(python-mode python-ts-mode
    c-mode c-ts-mode c++-mode c++-ts-mode
    js-mode js-ts-mode typescript-mode typescript-ts-mode
    go-mode go-ts-mode rust-mode rust-ts-mode
    java-mode java-ts-mode sh-mode bash-ts-mode)
  "Major modes whose buffers `spectab-eglot-setup' connects to spectab.
Eglot runs one server per buffer: for these modes spectab replaces any
other server listed in `eglot-server-programs'."
  :type '(repeat symbol))

(defcustom spectab-profile nil
  "Model profile: \"auto\", \"codellama-7b\" or \"smollm2-135m\".
nil leaves the server's default (auto)."
  :type '(choice (const :tag "Server default" nil) string))

(defcustom spectab-target nil
  "Target model: a hub id, a Hugging Face folder or a .gguf file.
nil leaves the profile's."
  :type '(choice (const :tag "Profile's" nil) string))

(defcustom spectab-draft nil
  "Draft model: a model, \"ngram\" or \"none\".  nil leaves the profile's."
  :type '(choice (const :tag "Profile's" nil) string))

(defcustom spectab-device nil
  "Device: \"auto\", \"cpu\", \"cuda\", \"cuda:N\" or \"mps\".
nil leaves the server's default (auto)."
  :type '(choice (const :tag "Server default" nil) string))

(defcustom spectab-quant nil
  "How the model's weights run: \"auto\", \"none\", \"int8\" or \"int4\".
auto: on the CPU a GGUF keeps its own precision where it maps onto the
int4/int8 kernels (Q4_0/Q4_1 int4, Q8_0 int8), anything else int8; on
CUDA/MPS float.  none: float weights.  int8/int4: weight-only
quantization, CPU only.  nil: the server's default (auto).  Changing it
reloads the model."
  :type '(choice (const :tag "Server default" nil)
                 (const "auto") (const "none") (const "int8") (const "int4")))

(defcustom spectab-threads nil
  "CPU threads for the engine (1..256); 0 means the physical cores.
nil: the server's default (0).  Applies without reloading the model."
  :type '(choice (const :tag "Server default" nil) integer))

(defcustom spectab-dtype nil
  "Model precision: \"auto\", \"float32\", \"bfloat16\" or \"float16\".
nil: the server's default (auto)."
  :type '(choice (const :tag "Server default" nil)
                 (const "auto") (const "float32") (const "bfloat16") (const "float16")))

(defcustom spectab-fim nil
  "Infilling prompt format: \"auto\", \"psm\", \"spm\" or \"none\".
nil: the server's default (auto)."
  :type '(choice (const :tag "Server default" nil)
                 (const "auto") (const "psm") (const "spm") (const "none")))

(defcustom spectab-engine nil
  "Where the models run: \"shared\", \"inprocess\" or an http(s):// URL.
shared: one engine process for all your editors (started when absent);
inprocess: the models load inside this editor's server; a URL: a remote
server (see `spectab-engine-api').  nil: the server's default (shared).
Changing it reloads."
  :type '(choice (const :tag "Server default" nil)
                 (const "shared") (const "inprocess") (string :tag "URL")))

(defcustom spectab-engine-api nil
  "For a URL `spectab-engine': \"openai\" or \"infill\".
openai: an OpenAI-compatible /v1/completions server (vLLM, SGLang, TGI,
llama-server, llama-cpp-python); infill: llama.cpp's /infill.
nil: the server's default (openai)."
  :type '(choice (const :tag "Server default" nil) (const "openai") (const "infill")))

(defcustom spectab-engine-model nil
  "For a URL `spectab-engine': the model name to ask for.
Empty: the server's first (/v1/models).  nil: the server's default (empty)."
  :type '(choice (const :tag "Server default" nil) string))

(defcustom spectab-engine-api-key-env nil
  "For a URL `spectab-engine': the NAME of the variable with the API key.
That is an environment variable; the key itself is never put in
settings.  nil: the server's default (none)."
  :type '(choice (const :tag "Server default" nil) string))

(defcustom spectab-kv-lanes nil
  "KV caches kept, one per document (0..256).
0 means as many as fit in half the free memory (1..16).
nil: the server's default (0)."
  :type '(choice (const :tag "Server default" nil) integer))

(defcustom spectab-idle-minutes nil
  "Minutes before a shared engine started by this editor exits, unused.
Unused: no editor connected.  0 means never (0..10080).
nil: the server's default (30)."
  :type '(choice (const :tag "Server default" nil) number))

(defcustom spectab-max-new-tokens nil
  "Most tokens in one suggestion (1..512).  nil: the server's default (64)."
  :type '(choice (const :tag "Server default" nil) integer))

(defcustom spectab-temperature nil
  "Sampling temperature; 0 is greedy.  nil: the server's default (0)."
  :type '(choice (const :tag "Server default" nil) number))

(defcustom spectab-debounce-ms nil
  "Server-side wait after an automatic trigger, in milliseconds.
nil: the server's default (75).  `spectab-idle-delay' already waits in
Emacs; lower this to 0 to save that time."
  :type '(choice (const :tag "Server default" nil) integer))

(defcustom spectab-deadline-ms nil
  "After this many milliseconds the server answers with what it has.
nil: the server's default (4000)."
  :type '(choice (const :tag "Server default" nil) integer))

(defcustom spectab-multiline nil
  "Multi-line suggestions: \"auto\", \"always\" or \"never\".
nil: the server's default (auto: only when the rest of the line is empty)."
  :type '(choice (const :tag "Server default" nil)
                 (const "auto") (const "always") (const "never")))

(defcustom spectab-context-tokens nil
  "Prompt budget in tokens around the cursor.  nil: the server's (1024)."
  :type '(choice (const :tag "Server default" nil) integer))

(defcustom spectab-languages nil
  "LSP languageIds the server completes in; nil (or empty) means all."
  :type '(repeat string))

;; The four below leave their defaults to the server (its README lists them), so a change there
;; needs none here.

(defcustom spectab-extra-context-tokens nil
  "Token budget for chunks of the other open files in the prompt (0..4096).
0 means none.  nil: the server's default."
  :type '(choice (const :tag "Server default" nil) integer))

(defcustom spectab-min-confidence nil
  "Cut a suggestion before its first token below this probability (0..1).
0 means no cut.  nil: the server's default."
  :type '(choice (const :tag "Server default" nil) number))

(defcustom spectab-candidates nil
  "Most suggestions an explicit request returns (1..8).
Automatic requests get one.  `spectab-next' and `spectab-previous'
cycle through them.  nil: the server's default."
  :type '(choice (const :tag "Server default" nil) integer))

(defcustom spectab-draft-fim nil
  "How the draft model reads the prompt: \"auto\" or \"none\".
auto: a draft that can infill reads the target's infilling prompt;
none: the prefix left to right.  nil: the server's default (auto).
Changing it reloads the model."
  :type '(choice (const :tag "Server default" nil) (const "auto") (const "none")))

(defconst spectab--setting-variables
  '((:profile . spectab-profile)
    (:target . spectab-target)
    (:draft . spectab-draft)
    (:device . spectab-device)
    (:dtype . spectab-dtype)
    (:fim . spectab-fim)
    (:quant . spectab-quant)
    (:threads . spectab-threads)
    (:engine . spectab-engine)
    (:engineApi . spectab-engine-api)
    (:engineModel . spectab-engine-model)
    (:engineApiKeyEnv . spectab-engine-api-key-env)
    (:kvLanes . spectab-kv-lanes)
    (:idleMinutes . spectab-idle-minutes)
    (:maxNewTokens . spectab-max-new-tokens)
    (:temperature . spectab-temperature)
    (:debounceMs . spectab-debounce-ms)
    (:deadlineMs . spectab-deadline-ms)
    (:multiline . spectab-multiline)
    (:contextTokens . spectab-context-tokens)
    (:languages . spectab-languages)
    (:extraContextTokens . spectab-extra-context-tokens)
    (:minConfidence . spectab-min-confidence)
    (:candidates . spectab-candidates)
    (:draftFim . spectab-draft-fim))
  "The server's setting keys and the variables that hold them.")

(defun spectab-settings ()
  "The server settings from the spectab variables, as a JSON plist.
Variables left at nil are not sent: the server keeps its default."
  (let (plist)
    (pcase-dolist (`(,key . ,var) spectab--setting-variables)
      (let ((value (symbol-value var)))
        (when value
          (setq plist (append plist (list key (if (eq key :languages)
                                                  (vconcat value)
                                                value)))))))
    plist))

(defun spectab--initialization-options (&rest _server)
  "The initializationOptions for a new server: `spectab-settings'."
  (or (spectab-settings) (make-hash-table)))

(defun spectab--contact (&rest _)
  "Eglot contact for spectab: `spectab-server-command' and the settings."
  (append spectab-server-command
          (list :initializationOptions #'spectab--initialization-options)))

;;;###autoload
(defun spectab-eglot-setup ()
  "Use spectab as eglot's server for `spectab-major-modes'.
Also turn on `spectab-mode' in the buffers eglot then manages."
  (interactive)
  (setq eglot-server-programs
        (cons (cons spectab-major-modes #'spectab--contact)
              (cl-remove #'spectab--contact eglot-server-programs
                         :key #'cdr :test #'eq)))
  (add-hook 'eglot-managed-mode-hook #'spectab--maybe-enable))

(defun spectab--server-p (server)
  "Non-nil when SERVER is live and serves inline completions."
  (and server
       (jsonrpc-running-p server)
       (plist-get (eglot--capabilities server) :inlineCompletionProvider)))

(defun spectab--server ()
  "The eglot server of this buffer when it serves inline completions."
  (let ((server (and (eglot-managed-p) (eglot-current-server))))
    (and (spectab--server-p server) server)))

(defvar spectab-mode)

(defun spectab--maybe-enable ()
  "Turn `spectab-mode' on or off with eglot's management of the buffer."
  (if (and (eglot-managed-p) (spectab--server))
      (spectab-mode 1)
    (when spectab-mode (spectab-mode -1))))

(defun spectab-send-settings ()
  "Send the current spectab settings to this buffer's server.
Settings are read at start as initializationOptions; call this after
changing them in a running session (model changes reload the model)."
  (interactive)
  (let ((server (or (spectab--server) (user-error "No spectab server here"))))
    (jsonrpc-notify server :workspace/didChangeConfiguration
                    (list :settings (list :spectab (spectab--initialization-options))))))

;;;; Display and keys

(defface spectab-suggestion-face
  '((t :inherit shadow))
  "Face of the suggested text shown at point.")

(defcustom spectab-idle-delay 0.15
  "Seconds of idleness after an edit before asking for a suggestion."
  :type 'number)

(defcustom spectab-request-timeout 30
  "Seconds after which an unanswered request is given up.
Never less than `spectab-deadline-ms' plus `spectab--deadline-margin':
at its deadline the server answers with what it has, and that answer
must not be thrown away."
  :type 'number)

(defconst spectab--deadline-margin 10
  "Seconds an answer may take beyond the server's deadline.
The server checks its deadline between generation steps, one of which
takes a second or more on a busy CPU, then post-processes and sends.")

(defun spectab--request-timeout ()
  "Seconds to wait for an answer: see `spectab-request-timeout'."
  (max spectab-request-timeout
       (if (numberp spectab-deadline-ms)
           (+ (/ spectab-deadline-ms 1000.0) spectab--deadline-margin)
         0)))

(defcustom spectab-keep-suggestion-commands
  '(ignore handle-switch-frame handle-select-window handle-focus-in handle-focus-out)
  "Commands that leave a shown suggestion alone (other input dismisses it)."
  :type '(repeat symbol))

(defcustom spectab-mode-line t
  "Whether `spectab-mode' shows its state in the mode line."
  :type 'boolean)

(defvar spectab-active-map (make-sparse-keymap)
  "Keys active only while a suggestion is shown.")

(defvar spectab--emulation-alist nil
  "The entry of `emulation-mode-map-alists' for `spectab-active-map'.")

(defconst spectab--key-variables
  '((spectab-accept-keys . spectab-accept)
    (spectab-accept-word-keys . spectab-accept-word)
    (spectab-accept-line-keys . spectab-accept-line)
    (spectab-next-keys . spectab-next)
    (spectab-previous-keys . spectab-previous))
  "The key options and the command each binds in `spectab-active-map'.")

(defun spectab--set-keys (symbol keys)
  "Set SYMBOL to KEYS and rebuild `spectab-active-map' from all key options."
  (set-default symbol keys)
  (let ((map (make-sparse-keymap)))
    (pcase-dolist (`(,var . ,command) spectab--key-variables)
      (dolist (key (and (boundp var) (symbol-value var)))
        (define-key map (kbd key) command)))
    (setq spectab-active-map map
          spectab--emulation-alist `((spectab--visible . ,map)))))

(defcustom spectab-accept-keys '("TAB" "<tab>")
  "Keys that accept a shown suggestion (in `kbd' syntax).
They are bound only while a suggestion is shown, so they keep their
usual bindings otherwise.  Set this with `customize' or `setopt'."
  :type '(repeat string)
  :set #'spectab--set-keys)

(defcustom spectab-accept-word-keys '("M-f" "M-<right>")
  "Keys that insert the next word of a shown suggestion (`spectab-accept-word').
Like `forward-word' over the ghost text.  Bound only while a
suggestion is shown.  Set this with `customize' or `setopt'."
  :type '(repeat string)
  :set #'spectab--set-keys)

(defcustom spectab-accept-line-keys '("C-e" "M-<down>")
  "Keys that insert the next line of a shown suggestion (`spectab-accept-line').
Like `move-end-of-line' over the ghost text.  Bound only while a
suggestion is shown.  Set this with `customize' or `setopt'."
  :type '(repeat string)
  :set #'spectab--set-keys)

(defcustom spectab-next-keys '("M-n")
  "Keys that show the next suggestion of the last answer (`spectab-next').
Bound only while a suggestion is shown.  Set this with `customize' or `setopt'."
  :type '(repeat string)
  :set #'spectab--set-keys)

(defcustom spectab-previous-keys '("M-p")
  "Keys that show the previous suggestion of the last answer (`spectab-previous').
Bound only while a suggestion is shown.  Set this with `customize' or `setopt'."
  :type '(repeat string)
  :set #'spectab--set-keys)

(defvar spectab-mode-map (make-sparse-keymap)
  "Keymap of `spectab-mode'.  Nothing is bound by default.
For instance, to ask for a suggestion with M-RET:
\(define-key spectab-mode-map (kbd \"M-<return>\") #\\='spectab-complete)")

;;;; State (all buffer-local)

(defvar-local spectab--visible nil
  "Non-nil while a suggestion is shown (activates `spectab-active-map').")
(defvar-local spectab--overlay nil "The overlay that shows the suggestion.")
(defvar-local spectab--current nil
  "The shown suggestion: a plist with :start (marker), :end (marker or nil:
text after point the item replaces), :text (what it inserts from :start),
:typed (how many of its characters are already in the buffer), :item,
:server, :valid (nil once an edit did not type the suggestion).")
(defvar-local spectab--candidates nil
  "The usable items of the last answer: plists (:text :end :item), all
starting at the shown suggestion's :start.")
(defvar-local spectab--index 0 "Which of `spectab--candidates' is shown.")
(defvar-local spectab--seq 0 "Number of the newest request; older answers are stale.")
(defvar-local spectab--pending nil "(SERVER ID) of the request in flight, or nil.")
(defvar-local spectab--timer nil "The idle timer of the next automatic request.")
(defvar-local spectab--last-tick nil "`buffer-chars-modified-tick' after the last command.")

(defvar spectab--server-states (make-hash-table :test #'eq :weakness 'key)
  "Server -> (STATE . TIME): the last `spectab/status' state seen.")

(defvar spectab-suggestion-shown-hook nil
  "Hook run (in the buffer) right after a suggestion is shown.")

;;;; The minor mode

;;;###autoload
(define-minor-mode spectab-mode
  "Show spectab's inline completions as ghost text; TAB accepts them.
Needs a buffer managed by eglot with the spectab server (see
`spectab-eglot-setup')."
  :lighter (:eval (spectab--lighter))
  :keymap spectab-mode-map
  (if spectab-mode
      (progn
        (unless (memq 'spectab--emulation-alist emulation-mode-map-alists)
          (push 'spectab--emulation-alist emulation-mode-map-alists))
        (add-hook 'post-command-hook #'spectab--post-command nil t)
        (add-hook 'after-change-functions #'spectab--after-change nil t)
        (add-hook 'completion-at-point-functions #'spectab-completion-at-point -50 t)
        (setq spectab--last-tick (buffer-chars-modified-tick))
        (spectab--refresh-state))
    (remove-hook 'post-command-hook #'spectab--post-command t)
    (remove-hook 'after-change-functions #'spectab--after-change t)
    (remove-hook 'completion-at-point-functions #'spectab-completion-at-point t)
    (spectab--cancel-timer)
    (spectab--cancel-pending)
    (spectab-dismiss)))

(defun spectab--after-change (beg end len)
  "Follow typing into the suggestion: BEG END LEN as in `after-change-functions'."
  (when-let ((cur spectab--current))
    (let* ((start (marker-position (plist-get cur :start)))
           (typed (plist-get cur :typed))
           (text (plist-get cur :text))
           (n (- end beg)))
      (if (and (plist-get cur :valid)
               (zerop len)
               (= beg (+ start typed))
               (<= (+ typed n) (length text))
               (string= (buffer-substring-no-properties beg end)
                        (substring text typed (+ typed n))))
          (plist-put cur :typed (+ typed n))
        (plist-put cur :valid nil)))))

(defun spectab--post-command ()
  "After each command: keep, shrink or dismiss the suggestion; schedule a request."
  (let ((edited (not (eql spectab--last-tick (buffer-chars-modified-tick)))))
    (setq spectab--last-tick (buffer-chars-modified-tick))
    (unless (or (eq this-command 'spectab-complete) ; it has just asked
                ;; no command: a command loop starting (a recursive edit, a keyboard macro)
                (and (not edited) (or (null this-command)
                                      (memq this-command spectab-keep-suggestion-commands)
                                      ;; they have just drawn another suggestion
                                      (memq this-command '(spectab-next spectab-previous)))))
      (when spectab--current
        (let* ((cur spectab--current)
               (at (+ (marker-position (plist-get cur :start)) (plist-get cur :typed))))
          (if (and edited (plist-get cur :valid) (= (point) at)
                   (< (plist-get cur :typed) (length (plist-get cur :text))))
              ;; the user typed the suggestion's next characters: show the rest
              (spectab--display)
            (spectab-dismiss))))
      ;; other input: whatever was asked for is out of date
      (spectab--cancel-timer)
      (spectab--cancel-pending)
      (when (and edited (not spectab--current) (not (eq this-command 'spectab-accept)))
        (setq spectab--timer
              (run-with-idle-timer spectab-idle-delay nil #'spectab--idle-trigger
                                   (current-buffer)))))))

(defun spectab--cancel-timer ()
  "Cancel the scheduled automatic request."
  (when spectab--timer
    (cancel-timer spectab--timer)
    (setq spectab--timer nil)))

(defun spectab--idle-trigger (buffer)
  "Ask for a suggestion in BUFFER, if it is still the one being edited."
  (when (and (buffer-live-p buffer) (eq buffer (current-buffer)))
    (with-current-buffer buffer
      (setq spectab--timer nil)
      (when (and spectab-mode (not spectab--current))
        (spectab--request 2)))))

;;;; Requests

(defun spectab--send-request (server method params &rest args)
  "Send METHOD with PARAMS to SERVER asynchronously; return the request id.
ARGS are those of `jsonrpc-async-request'."
  (if (fboundp 'jsonrpc--async-request-1)
      (car (apply #'jsonrpc--async-request-1 server method params args))
    (apply #'jsonrpc-async-request server method params args)
    nil))

(defun spectab--cancel-pending ()
  "Tell the server the request in flight is no longer wanted."
  (when spectab--pending
    (pcase-let ((`(,server ,id) spectab--pending))
      (setq spectab--pending nil)
      (when (and id (jsonrpc-running-p server))
        (jsonrpc-notify server :$/cancelRequest (list :id id))))
    (force-mode-line-update)))

(defun spectab--quiet-cancellation (server err)
  "Clear SERVER's last error if it is ERR, the reply to a request we cancelled.
Eglot shows a connection's last error in the mode line; a request we
cancelled ourselves (code -32800) is no error to show."
  (when (and (eql (plist-get err :code) -32800) (fboundp 'jsonrpc-last-error))
    (ignore-errors
      (when (eq (jsonrpc-last-error server) err)
        (setf (jsonrpc-last-error server) nil)
        (force-mode-line-update t)))))

(defun spectab--flush-changes ()
  "Send eglot's pending didChange now, so the request sees this text."
  (cond ((fboundp 'eglot--signal-textDocument/didChange)
         (eglot--signal-textDocument/didChange))))

(defun spectab--request (trigger-kind)
  "Ask for an inline completion at point (TRIGGER-KIND 1 invoked, 2 automatic).
A newer request supersedes this one; an answer for another buffer state
or point than the one asked about is ignored."
  (when-let ((server (spectab--server)))
    (spectab--cancel-pending)
    (spectab--flush-changes)
    (let* ((seq (cl-incf spectab--seq))
           (buffer (current-buffer))
           (tick (buffer-chars-modified-tick))
           (pos (point))
           (params (append (eglot--TextDocumentPositionParams)
                           (list :context (list :triggerKind trigger-kind))))
           (id (spectab--send-request
                server :textDocument/inlineCompletion params
                :timeout (spectab--request-timeout)
                :success-fn (lambda (result)
                              (spectab--answered buffer seq tick pos server result))
                :error-fn (lambda (&optional err &rest _)
                            (spectab--quiet-cancellation server err)
                            (spectab--answered buffer seq tick pos server nil))
                :timeout-fn (lambda () (spectab--answered buffer seq tick pos server nil)))))
      (setq spectab--pending (list server id))
      (force-mode-line-update)
      seq)))

(defun spectab--answered (buffer seq tick pos server result)
  "Show RESULT from SERVER in BUFFER if it answers the newest request.
That is request SEQ, made at modification tick TICK and point POS."
  (when (buffer-live-p buffer)
    (with-current-buffer buffer
      (when (eql seq spectab--seq)
        (setq spectab--pending nil)
        (force-mode-line-update)
        (when (and spectab-mode
                   (eql tick (buffer-chars-modified-tick))
                   (eql pos (point)))
          (let ((items (spectab--items result)))
            (if (not items)
                (spectab--refresh-state server)
              (unless (equal (spectab--state server) "ready")
                (spectab--set-state server "ready"))
              (spectab--show items server))))))))

(defun spectab--items (result)
  "The InlineCompletionItems of RESULT (a list object or an array) with text."
  (let ((items (if (vectorp result) result (plist-get result :items))))
    (cl-remove-if-not #'spectab--insert-text (append items nil))))

(defun spectab--insert-text (item)
  "Return the text that ITEM would insert (a string or snippet value), or nil."
  (let ((text (plist-get item :insertText)))
    (when (and (listp text) text) (setq text (plist-get text :value)))
    (and (stringp text) (not (string-empty-p text)) text)))

(defun spectab--show (items server)
  "Show the first of ITEMS (InlineCompletionItems) from SERVER that fits point.
The others that start where it does are kept for `spectab-next'."
  (let (start candidates)
    (dolist (item items)
      (let* ((text (spectab--insert-text item))
             (range (plist-get item :range))
             (beg (if range (eglot--lsp-position-to-point (plist-get range :start)) (point)))
             (end (if range (eglot--lsp-position-to-point (plist-get range :end)) (point)))
             (typed (- (point) beg)))
        ;; the range may start before point (text typed since); it must hold what is typed
        (when (and (<= beg (point)) (>= end (point))
                   (or (null start) (= beg start))
                   (< typed (length text))
                   (string= (buffer-substring-no-properties beg (point)) (substring text 0 typed)))
          (setq start beg)
          (push (list :text text :end (and (> end (point)) (copy-marker end t)) :item item)
                candidates))))
    (when candidates
      (setq spectab--candidates (nreverse candidates))
      (spectab--select 0 1 (copy-marker start) server)
      (run-hooks 'spectab-suggestion-shown-hook))))

(defun spectab--select (index step start server)
  "Show candidate INDEX, or the next in direction STEP that fits the text typed.
That is the text from START to point: what has been typed or accepted of
the suggestion since the answer.  Return the index shown, or nil."
  (let* ((n (length spectab--candidates))
         (typed (buffer-substring-no-properties start (point))))
    (cl-loop for tries below n
             for i = (mod (+ index (* tries step)) n)
             for c = (nth i spectab--candidates)
             for text = (plist-get c :text)
             when (and (> (length text) (length typed)) (string-prefix-p typed text))
             return (progn
                      (setq spectab--index i
                            spectab--current (list :start start :end (plist-get c :end) :text text
                                                   :typed (length typed) :item (plist-get c :item)
                                                   :server server :valid t))
                      (spectab--display)
                      i))))

(defun spectab--display ()
  "Draw the untyped rest of `spectab--current' at point."
  (let* ((cur spectab--current)
         (ghost (substring (plist-get cur :text) (plist-get cur :typed)))
         (shown (propertize ghost 'face 'spectab-suggestion-face)))
    ;; the cursor stays before the ghost text, where point is
    (put-text-property 0 1 'cursor t shown)
    (unless (overlayp spectab--overlay)
      (setq spectab--overlay (make-overlay (point) (point) nil nil t))
      (overlay-put spectab--overlay 'spectab t)
      (overlay-put spectab--overlay 'priority 1000))
    (move-overlay spectab--overlay (point) (point) (current-buffer))
    (overlay-put spectab--overlay 'window (selected-window))
    (overlay-put spectab--overlay 'after-string shown)
    (setq spectab--visible t)))

(defun spectab-suggestion ()
  "The suggestion shown at point (the text not yet typed), or nil."
  (and spectab--current spectab--visible
       (substring (plist-get spectab--current :text) (plist-get spectab--current :typed))))

;;;; Commands

(defun spectab-dismiss ()
  "Hide the shown suggestion."
  (interactive)
  (when (overlayp spectab--overlay)
    (delete-overlay spectab--overlay))
  (setq spectab--overlay nil spectab--visible nil spectab--current nil spectab--candidates nil))

(defun spectab-complete ()
  "Ask for a suggestion at point now (an explicit trigger: no server debounce)."
  (interactive)
  (unless (spectab--server)
    (user-error "No spectab server manages this buffer (see `spectab-eglot-setup')"))
  (spectab--cancel-timer)
  (spectab-dismiss)
  (spectab--request 1))

(defun spectab-accept ()
  "Insert the shown suggestion; without one, run the key's usual command."
  (interactive)
  (if (not (spectab-suggestion))
      (spectab--fallback)
    (let* ((cur spectab--current)
           (rest (spectab-suggestion))
           (end (plist-get cur :end)))
      (spectab-dismiss)
      (when (and end (> end (point)))
        (delete-region (point) end))
      (insert rest)
      (spectab--accepted (plist-get cur :server) (plist-get cur :item)))))

(defun spectab--next-word (text)
  "The next word of TEXT, for `spectab-accept-word'.
That is its leading whitespace (newlines too), then either a run of
letters, digits and `_' or a run of other non-blank characters
\(punctuation); all of TEXT when only whitespace is left."
  (string-match "\\`[ \t\n\r\f\v]*\\(?:[[:alnum:]_]+\\|[^[:alnum:]_ \t\n\r\f\v]+\\)?" text)
  (match-string 0 text))

(defun spectab--next-line (text)
  "The next line of TEXT with its newline; on the last line, all of TEXT."
  (if (string-match "\n" text) (substring text 0 (match-end 0)) text))

(defun spectab--accept-part (piece-of)
  "Insert (PIECE-OF suggestion) and keep the rest shown.
The last piece of it is a whole accept (`spectab-accept')."
  (let ((rest (spectab-suggestion)))
    (if (not rest)
        (spectab--fallback)
      (let ((piece (funcall piece-of rest))
            (server (plist-get spectab--current :server)))
        (if (>= (length piece) (length rest))
            (spectab-accept)
          ;; `spectab--after-change' counts it as typed and `spectab--post-command' shows the
          ;; rest, without a new request, as when the user types the suggestion
          (insert piece)
          (spectab--accepted-part server piece))))))

(defun spectab-accept-word ()
  "Insert the next word of the shown suggestion; the rest stays shown.
A word is leading whitespace, then a run of letters, digits and `_', or
a run of punctuation.  Without a suggestion, run the key's usual command."
  (interactive)
  (spectab--accept-part #'spectab--next-word))

(defun spectab-accept-line ()
  "Insert the next line of the shown suggestion, newline included.
The rest stays shown.  Without a suggestion, run the key's usual command."
  (interactive)
  (spectab--accept-part #'spectab--next-line))

(defun spectab--cycle (step)
  "Show the suggestion STEP items on in the last answer."
  (if (not (spectab-suggestion))
      (spectab--fallback)
    (let* ((cur spectab--current)
           (n (length spectab--candidates))
           (i (spectab--select (+ spectab--index step) step (plist-get cur :start)
                               (plist-get cur :server))))
      (when (> n 1)
        (message "spectab: suggestion %d of %d" (1+ (or i spectab--index)) n)))))

(defun spectab-next ()
  "Show the next suggestion of the last answer (explicit requests get several).
Without a suggestion, run the key's usual command."
  (interactive)
  (spectab--cycle 1))

(defun spectab-previous ()
  "Show the previous suggestion of the last answer.
Without a suggestion, run the key's usual command."
  (interactive)
  (spectab--cycle -1))

(defun spectab--fallback ()
  "Run what the keys of this command run without `spectab-active-map'."
  (let* ((spectab--visible nil)
         (command (key-binding (this-command-keys-vector) t)))
    (when (and command (not (rassq command spectab--key-variables)) (commandp command))
      (setq this-command command)
      (call-interactively command))))

(defun spectab--accepted (server item)
  "Run ITEM's command on SERVER, to tell spectab a suggestion was taken."
  (when-let ((command (plist-get item :command)))
    (when (jsonrpc-running-p server)
      (spectab--send-request server :workspace/executeCommand
                             (list :command (plist-get command :command)
                                   :arguments (or (plist-get command :arguments) []))
                             :success-fn #'ignore :error-fn #'ignore :timeout-fn #'ignore))))

(defun spectab--accepted-part (server piece)
  "Tell SERVER that PIECE of a suggestion was taken.
It counts those apart from whole suggestions."
  (when (jsonrpc-running-p server)
    (spectab--send-request server :workspace/executeCommand
                           (list :command "spectab.accepted"
                                 :arguments (vector (append (eglot--TextDocumentIdentifier)
                                                            (list :chars (length piece) :partial t))))
                           :success-fn #'ignore :error-fn #'ignore :timeout-fn #'ignore)))

;;;; completion-at-point

(defun spectab-completion-at-point ()
  "Eglot's `completion-at-point', also telling spectab when an item is taken.
Eglot itself does not run a completion item's command."
  (when-let ((server (spectab--server))
             (capf (eglot-completion-at-point)))
    (let* ((table (nth 2 capf))
           (props (nthcdr 3 capf))
           (exit (plist-get props :exit-function)))
      (append (cl-subseq capf 0 3)
              (plist-put (copy-sequence props) :exit-function
                         (lambda (proxy status)
                           (let ((item (spectab--completion-item proxy table)))
                             (when exit (funcall exit proxy status))
                             (when (and item (memq status '(finished exact)))
                               (spectab--accepted server item)))))))))

(defun spectab--completion-item (proxy table)
  "The LSP CompletionItem of the string PROXY from the completion TABLE."
  (when (and (stringp proxy) (not (string-empty-p proxy)))
    (or (get-text-property 0 'eglot--lsp-item proxy)
        ;; the inserted text has lost its properties: find it among the candidates
        (let ((found (cl-find proxy (ignore-errors (all-completions "" table))
                              :test #'string=)))
          (and found (get-text-property 0 'eglot--lsp-item found))))))

;;;; Status

(defun spectab--state (server)
  "The last known state of SERVER: \"loading\", \"ready\", \"error\" or nil."
  (car (gethash server spectab--server-states)))

(defun spectab--set-state (server state)
  "Remember STATE for SERVER; while loading, ask again in 2 seconds."
  (puthash server (cons state (float-time)) spectab--server-states)
  (when (equal state "loading")
    (run-with-timer 2 nil #'spectab--refresh-state server))
  (force-mode-line-update t))

(defun spectab--refresh-state (&optional server)
  "Ask SERVER (or this buffer's) for its state, unless it is known to be ready."
  (when-let ((server (or server (spectab--server))))
    (when (and (jsonrpc-running-p server)
               (not (equal (spectab--state server) "ready")))
      (spectab--send-request server :spectab/status (make-hash-table)
                             :success-fn (lambda (status)
                                           (spectab--set-state server (plist-get status :state)))
                             :error-fn #'ignore :timeout-fn #'ignore))))

(defun spectab--lighter ()
  "The mode-line text of `spectab-mode'."
  (when spectab-mode-line
    (let ((state (ignore-errors (spectab--state (eglot-current-server)))))
      (cond ((equal state "loading") " spectab:loading")
            ((equal state "error") " spectab:error")
            (spectab--pending " spectab…")
            (spectab--visible " spectab*")
            (t " spectab")))))

(defun spectab--format-status (status)
  "One line about STATUS, the answer of `spectab/status'."
  (let ((state (plist-get status :state)))
    (concat
     (format "spectab: %s" state)
     (when (plist-get status :target)
       (format " — %s (draft %s) on %s" (plist-get status :target)
               (plist-get status :draft) (plist-get status :device)))
     (when (equal state "error") (format ": %s" (plist-get status :error)))
     (when-let ((engine (plist-get status :engine)))
       (format "; engine %s%s%s" engine
               (cond ((and (equal engine "remote") (plist-get status :engineUrl))
                      (format " %s" (plist-get status :engineUrl)))
                     ((plist-get status :enginePid)
                      (format " (pid %s)" (plist-get status :enginePid)))
                     (t ""))
               (if (plist-get status :lane) (format ", lane %s" (plist-get status :lane)) "")))
     (format "; %s requests, %s generations, %s accepted"
             (plist-get status :requests) (plist-get status :generations)
             (plist-get status :acceptedSuggestions))
     (when-let ((partial (plist-get status :partialAccepts)))
       (format " (+%s partial)" partial))
     (when-let ((ms (plist-get status :lastLatencyMs))) (format ", last %s ms" ms)))))

(defun spectab-status (&optional full)
  "Show the server's `spectab/status'; with prefix argument FULL, every field.
Returns the status as a plist."
  (interactive "P")
  (let* ((server (or (spectab--server)
                     (user-error "No spectab server manages this buffer (see `spectab-eglot-setup')")))
         ;; with this buffer's uri the answer says which KV lane it uses
         (status (jsonrpc-request server :spectab/status
                                  (if buffer-file-name (eglot--TextDocumentIdentifier) (make-hash-table))
                                  :timeout 10)))
    (spectab--set-state server (plist-get status :state))
    (if full
        (with-help-window "*spectab status*"
          (cl-loop for (key value) on status by #'cddr
                   do (princ (format "%-22s %s\n" (substring (symbol-name key) 1)
                                     (if (null value) "-" value)))))
      (message "%s" (spectab--format-status status)))
    status))

(provide 'spectab)
;;; spectab.el ends here
