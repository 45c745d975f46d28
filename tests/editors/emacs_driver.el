;;; emacs_driver.el --- Drive spectab.el in Emacs batch mode for the tests and the benchmark  -*- lexical-binding: t; -*-

;; Loaded by tests/editors/emacs_harness.py as
;;   emacs --batch -L editor-clients/emacs -l tests/editors/emacs_driver.el -f spectab-driver-main
;; The scenario and its parameters come as JSON in $SPECTAB_DRIVER_ARGS; what was observed goes
;; as JSON to $SPECTAB_DRIVER_OUT.  The driver checks nothing itself: the Python side does.
;;
;; Keys are typed with `execute-kbd-macro', so they go through Emacs's command loop (key lookup
;; in the active keymaps, pre/post-command-hook) as a user's keys do.  Batch Emacs never becomes
;; idle, so idle timers never fire by themselves: `spectab-driver-idle' waits the idle delay in
;; real time and then runs the idle timers that Emacs would have run by then.

;;; Code:

(require 'cl-lib)
(require 'json)
(require 'subr-x)
(require 'spectab)

(defvar spectab-driver-args nil "The scenario's parameters (an alist from JSON).")
(defvar spectab-driver-result nil "What was observed: an alist written out as JSON.")

(defun spectab-driver-arg (key &optional default)
  "The parameter KEY (a symbol) or DEFAULT."
  (let ((cell (assq key spectab-driver-args)))
    (if cell (cdr cell) default)))

(defun spectab-driver-note (key value)
  "Record VALUE under KEY in the result."
  (setq spectab-driver-result (append spectab-driver-result (list (cons key value)))))

(defun spectab-driver-log (fmt &rest args)
  "Print a timestamped line (FMT and ARGS as in `format') on stderr."
  (message "[driver %.3f] %s" (float-time) (apply #'format fmt args)))

(defun spectab-driver-wait (predicate timeout &optional interval)
  "Process output until PREDICATE returns non-nil or TIMEOUT seconds pass; its value.
PREDICATE is tried every INTERVAL seconds (default 0.005)."
  (let ((deadline (+ (float-time) timeout)) value)
    (while (and (not (setq value (funcall predicate))) (< (float-time) deadline))
      (let ((next (+ (float-time) (or interval 0.005))))
        (while (< (float-time) next)
          (accept-process-output nil 0.005))))
    value))

(defun spectab-driver-idle (&optional seconds)
  "Be idle for SECONDS (default `spectab-idle-delay') and run the idle timers due by then."
  (let* ((seconds (or seconds spectab-idle-delay))
         (start (float-time)))
    (while (< (- (float-time) start) seconds)
      (accept-process-output nil 0.005))
    (dolist (timer (copy-sequence timer-idle-list))
      (when (and (memq timer timer-idle-list)
                 (<= (float-time (timer--time timer)) seconds))
        (timer-event-handler timer)))))

(defun spectab-driver-keys (keys)
  "Type KEYS (`kbd' syntax) through the command loop."
  (execute-kbd-macro (kbd keys)))

(defun spectab-driver-overlay-text ()
  "The text of spectab's overlay in this buffer, or nil when none is shown."
  (cl-loop for ov in (overlays-in (point-min) (point-max))
           when (and (overlay-get ov 'spectab) (overlay-get ov 'after-string))
           return (substring-no-properties (overlay-get ov 'after-string))))

(defun spectab-driver-status ()
  "The server's spectab/status (a plist)."
  (jsonrpc-request (eglot-current-server) :spectab/status (make-hash-table) :timeout 30))

(defun spectab-driver-open (file)
  "Visit FILE, connect eglot with spectab, wait until the model is ready."
  (setq spectab-server-command (append (spectab-driver-arg 'server_command) nil))
  (pcase-dolist (`(,var . ,value) (spectab-driver-arg 'settings))
    (set (intern (symbol-name var)) (if (vectorp value) (append value nil) value)))
  (define-key spectab-mode-map (kbd "C-c C-s") #'spectab-complete)
  (spectab-eglot-setup)
  (find-file file)
  (switch-to-buffer (current-buffer))
  (let ((eglot-sync-connect t))
    (call-interactively #'eglot))
  (unless (spectab-driver-wait #'eglot-managed-p 60)
    (error "Eglot did not start managing %s" file))
  (let ((ready (spectab-driver-wait
                (lambda ()
                  (let ((state (plist-get (spectab-driver-status) :state)))
                    (when (equal state "error") (error "The model failed to load"))
                    (equal state "ready")))
                (spectab-driver-arg 'ready_timeout 110)
                0.25)))
    (unless ready (error "The model was not ready in time")))
  (spectab-driver-note 'spectab_mode (and spectab-mode t))
  (spectab-driver-log "ready: %s" (spectab--format-status (spectab-driver-status))))

(defun spectab-driver-binding (keys)
  "The command KEYS run now, as a string."
  (format "%s" (key-binding (kbd keys))))

(defun spectab-driver-wait-overlay (timeout)
  "Wait up to TIMEOUT seconds for a suggestion; its text or nil."
  (spectab-driver-wait (lambda () (spectab-driver-overlay-text)) timeout))

(defun spectab-driver-wait-answered (timeout)
  "Wait up to TIMEOUT seconds until no request is in flight."
  (spectab-driver-wait (lambda () (not spectab--pending)) timeout))

(defun spectab-driver-save ()
  "Save the buffer and let the server see it."
  (save-buffer)
  (spectab-driver-note 'buffer (buffer-substring-no-properties (point-min) (point-max))))

(defun spectab-driver-accepted-after (before)
  "Wait until the server has counted an accepted suggestion beyond BEFORE; the count."
  (let (count)
    (spectab-driver-wait (lambda ()
                           (setq count (plist-get (spectab-driver-status) :acceptedSuggestions))
                           (> count before))
                         10 0.05)
    count))

;;;; Scenarios

(defun spectab-driver-inline ()
  "Type, get ghost text, dismiss, ask again, accept with TAB, save."
  (let ((timeout (spectab-driver-arg 'answer_timeout 60)))
    (goto-char (point-min))
    (search-forward (spectab-driver-arg 'after))
    (spectab-driver-note 'tab_without_suggestion (spectab-driver-binding "TAB"))
    ;; a request made stale by a cursor move before its answer: never shown
    (spectab-driver-keys (spectab-driver-arg 'last_key))
    (spectab-driver-idle)
    (spectab-driver-note 'request_sent (and spectab--pending t))
    (spectab-driver-keys "C-b")
    (spectab-driver-wait (lambda () (spectab-driver-overlay-text)) 2)
    (spectab-driver-note 'stale_overlay (spectab-driver-overlay-text))
    ;; the server answered the cancelled request with an error; eglot must not show it
    (spectab-driver-note 'last_error (format "%s" (or (jsonrpc-last-error (eglot-current-server)) "")))
    (spectab-driver-keys "C-f")
    ;; an explicit request (the command), then other input dismisses it
    (spectab-driver-keys "C-c C-s")
    (spectab-driver-note 'explicit_overlay (spectab-driver-wait-overlay timeout))
    (spectab-driver-keys "C-b")
    (spectab-driver-note 'overlay_after_other_input (spectab-driver-overlay-text))
    (spectab-driver-keys "C-f")
    ;; typing the last character again: the idle timer asks, TAB accepts
    (spectab-driver-keys "DEL")
    (spectab-driver-keys (spectab-driver-arg 'last_key))
    (spectab-driver-idle)
    (spectab-driver-note 'overlay (spectab-driver-wait-overlay timeout))
    (spectab-driver-note 'tab_with_suggestion (spectab-driver-binding "TAB"))
    ;; typing the suggestion's own first characters keeps the rest shown
    (let ((ahead (spectab-driver-arg 'type_ahead "")))
      (unless (string-empty-p ahead)
        (execute-kbd-macro ahead)
        (spectab-driver-note 'overlay_after_typing (spectab-driver-overlay-text))
        (spectab-driver-note 'requests_after_typing (and spectab--pending t))))
    (let ((before (plist-get (spectab-driver-status) :acceptedSuggestions)))
      (spectab-driver-keys "TAB")
      (spectab-driver-note 'overlay_after_accept (spectab-driver-overlay-text))
      (spectab-driver-note 'line (buffer-substring-no-properties (line-beginning-position) (line-end-position)))
      (spectab-driver-note 'point_at_line_end (eolp))
      (spectab-driver-save)
      (spectab-driver-note 'accepted_before before)
      (spectab-driver-note 'accepted_after (spectab-driver-accepted-after before)))))

(defun spectab-driver-counts-after (before)
  "Wait until the server has counted an accepted suggestion beyond BEFORE.
Return (ACCEPTED . PARTIAL), the server's counts then."
  (let (status)
    (spectab-driver-wait (lambda ()
                           (setq status (spectab-driver-status))
                           (> (plist-get status :acceptedSuggestions) before))
                         10 0.05)
    (cons (plist-get status :acceptedSuggestions) (plist-get status :partialAccepts))))

(defun spectab-driver-ask-at (after explicit)
  "Ask at the end of the line after the text AFTER; the overlay text or nil.
EXPLICIT: with the command (the server may answer several suggestions);
else by typing the line's last character again (an automatic request: one)."
  (goto-char (point-min))
  (search-forward after)
  (end-of-line)
  (if explicit
      (spectab-driver-keys "C-c C-s")
    (let ((last (char-before)))
      (delete-char -1)
      (setq spectab--last-tick (buffer-chars-modified-tick))
      (execute-kbd-macro (vector last))
      (spectab-driver-idle)))
  (spectab-driver-wait-overlay (spectab-driver-arg 'answer_timeout 60)))

(defun spectab-driver-partial ()
  "Type to get a suggestion, take its next word, its next line, then the rest; save."
  (let ((requests 0)
        (before (plist-get (spectab-driver-status) :acceptedSuggestions))
        pieces)
    (spectab-driver-note 'word_binding_without_suggestion (spectab-driver-binding (spectab-driver-arg 'word_key)))
    (spectab-driver-note 'suggestion (spectab-driver-ask-at (spectab-driver-arg 'after) nil))
    (advice-add 'spectab--request :before (lambda (&rest _) (cl-incf requests)) '((name . count)))
    (pcase-dolist (`(,name . ,keys) `(("word" . ,(spectab-driver-arg 'word_key))
                                      ("line" . ,(spectab-driver-arg 'line_key))
                                      ("rest" . "TAB")))
      (spectab-driver-note (intern (concat name "_binding")) (spectab-driver-binding keys))
      (spectab-driver-keys keys)
      ;; what a user would see next: Emacs waits for input, idle timers run
      (spectab-driver-idle)
      (push `((name . ,name)
              (buffer . ,(buffer-substring-no-properties (point-min) (point-max)))
              (ghost . ,(spectab-driver-overlay-text))
              (requests . ,requests))
            pieces))
    (spectab-driver-note 'pieces (vconcat (nreverse pieces)))
    (spectab-driver-save)
    (let ((counts (spectab-driver-counts-after before)))
      (spectab-driver-note 'accepted_before before)
      (spectab-driver-note 'accepted_after (car counts))
      (spectab-driver-note 'partial_accepts (cdr counts)))
    (spectab-driver-note 'status_line (spectab--format-status (spectab-driver-status)))))

(defun spectab-driver-cycle ()
  "Ask explicitly, cycle with the next/previous keys, accept what is shown; save."
  (let (items shown)
    (advice-add 'spectab--answered :before
                (lambda (_buffer _seq _tick _pos _server result)
                  (setq items (mapcar #'spectab--insert-text (spectab--items result))))
                '((name . items)))
    (push (spectab-driver-ask-at (spectab-driver-arg 'after) t) shown)
    (spectab-driver-note 'items (vconcat items))
    (dolist (keys (append (spectab-driver-arg 'cycle_keys) nil))
      (spectab-driver-keys keys)
      (push (spectab-driver-overlay-text) shown))
    (spectab-driver-note 'shown (vconcat (nreverse shown)))
    (spectab-driver-note 'next_binding (spectab-driver-binding "M-n"))
    (spectab-driver-keys "TAB")
    (spectab-driver-save)))

(defun spectab-driver-capf ()
  "`completion-at-point' (C-M-i) through eglot, with `spectab-mode' off and on."
  (goto-char (point-min))
  (search-forward (spectab-driver-arg 'after))
  (spectab-driver-note 'capf_key (spectab-driver-binding "C-M-i"))
  (let ((start (point)))
    ;; plain eglot: spectab-mode off
    (spectab-mode -1)
    (spectab-driver-keys "C-M-i")
    (spectab-driver-note 'line_plain (buffer-substring-no-properties (line-beginning-position) (line-end-position)))
    (delete-region start (line-end-position))
    ;; with spectab-mode: the same, and the server hears of the accepted item
    (spectab-mode 1)
    (let ((before (plist-get (spectab-driver-status) :acceptedSuggestions)))
      (spectab-driver-keys "C-M-i")
      (spectab-driver-note 'line (buffer-substring-no-properties (line-beginning-position) (line-end-position)))
      (spectab-driver-save)
      (spectab-driver-note 'accepted_before before)
      (spectab-driver-note 'accepted_after (spectab-driver-accepted-after before)))))

(defun spectab-driver-bench ()
  "Time triggers: keystroke (idle timer) and command, up to the overlay being shown."
  (let ((timeout (spectab-driver-arg 'answer_timeout 20))
        (rows nil)
        sent answered shown)
    (advice-add 'spectab--request :before (lambda (&rest _) (setq sent (float-time))) '((name . bench)))
    (advice-add 'spectab--answered :before
                (lambda (buffer seq &rest _)
                  (when (and (buffer-live-p buffer) (eql seq (buffer-local-value 'spectab--seq buffer)))
                    (setq answered (float-time))))
                '((name . bench)))
    (add-hook 'spectab-suggestion-shown-hook (lambda () (setq shown (float-time))))
    (dolist (trigger (append (spectab-driver-arg 'triggers) nil))
      (let ((line (alist-get 'line trigger))
            (cut (alist-get 'cut trigger))
            (how (alist-get 'how trigger))
            t0 text rest at)
        ;; the line is cut after CUT characters (not timed): the user is typing it
        (goto-char (point-min))
        (forward-line (1- line))
        (forward-char cut)
        (setq at (point) rest (buffer-substring-no-properties (point) (line-end-position)))
        (delete-region (point) (line-end-position))
        (setq sent nil answered nil shown nil)
        (if (equal how "key")
            (let ((last (char-before)))
              ;; typing the line's last character is the trigger
              (delete-char -1)
              (setq spectab--last-tick (buffer-chars-modified-tick))
              (setq t0 (float-time))
              (execute-kbd-macro (vector last))
              (spectab-driver-idle))
          (setq t0 (float-time))
          (spectab-driver-keys "C-c C-s"))
        (spectab-driver-wait (lambda () (or shown (and answered (not spectab--pending)))) timeout)
        (setq text (spectab-driver-overlay-text))
        (push `((how . ,how) (line . ,line) (shown . ,(and text t)) (chars . ,(length text))
                (total_ms . ,(and shown (* 1000 (- shown t0))))
                (to_request_ms . ,(and sent (* 1000 (- sent t0))))
                (request_to_answer_ms . ,(and sent answered (* 1000 (- answered sent))))
                (answer_to_shown_ms . ,(and answered shown (* 1000 (- shown answered)))))
              rows)
        (spectab-driver-log "%s line %d: %s" how line
                            (if shown (format "%.0f ms, %d chars" (* 1000 (- shown t0)) (length text)) "nothing shown"))
        (spectab-driver-keys "C-a")          ; other input: dismiss
        (goto-char at)                       ; and the line as it was
        (insert rest)))
    (spectab-driver-note 'rows (vconcat (nreverse rows)))
    (spectab-driver-note 'status (spectab-driver-status))))

(defun spectab-driver-main ()
  "Run the scenario named in $SPECTAB_DRIVER_ARGS and write $SPECTAB_DRIVER_OUT."
  (let* ((json-object-type 'alist)
         (json-array-type 'vector)
         (out (getenv "SPECTAB_DRIVER_OUT"))
         (code 0))
    (setq spectab-driver-args (json-read-from-string (getenv "SPECTAB_DRIVER_ARGS")))
    (spectab-driver-note 'emacs_version emacs-version)
    (spectab-driver-note 'eglot_version (or (ignore-errors
                                              (with-temp-buffer
                                                (insert-file-contents (locate-library "eglot.el"))
                                                (and (re-search-forward "^;; Version: \\(.*\\)$" nil t)
                                                     (match-string 1))))
                                            "unknown"))
    (condition-case err
        (progn
          (spectab-driver-open (spectab-driver-arg 'file))
          (pcase (spectab-driver-arg 'scenario)
            ("inline" (spectab-driver-inline))
            ("capf" (spectab-driver-capf))
            ("partial" (spectab-driver-partial))
            ("cycle" (spectab-driver-cycle))
            ("bench" (spectab-driver-bench))
            (other (error "Unknown scenario %s" other))))
      (error (setq code 1)
             (spectab-driver-note 'error (error-message-string err))))
    (ignore-errors
      (let ((server (eglot-current-server)))
        (when server
          (when (spectab-driver-arg 'events)
            (with-current-buffer (jsonrpc-events-buffer server)
              (spectab-driver-note 'events (buffer-substring-no-properties (point-min) (point-max)))))
          (eglot-shutdown server))))
    (with-temp-file out
      (insert (json-encode spectab-driver-result)))
    (kill-emacs code)))

;;; emacs_driver.el ends here
