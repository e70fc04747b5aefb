namespace Klf.Formats;

/// <summary>
/// Writes files and folders so that a reader never sees a half-written result: content goes to a
/// temporary sibling first, which is then renamed over the target (atomic on one file system).
/// </summary>
public static class AtomicFile
{
    /// <summary>A unique temporary path beside <paramref name="target"/> (same folder, so the rename stays on one file system).</summary>
    public static string TempPathFor(string target) =>
        Path.Combine(Path.GetDirectoryName(Path.GetFullPath(target))!,
            $".{Path.GetFileName(target)}.{Environment.ProcessId}.{Guid.NewGuid():N}.tmp");

    /// <summary>
    /// Runs <paramref name="write"/> on a fresh temporary file stream beside <paramref name="path"/>,
    /// flushes it to disk and renames it over <paramref name="path"/>. On any exception the temporary
    /// file is deleted and the target is left untouched.
    /// </summary>
    public static void Write(string path, Action<Stream> write)
    {
        var dir = Path.GetDirectoryName(Path.GetFullPath(path))!;
        Directory.CreateDirectory(dir);
        var tmp = TempPathFor(path);
        try
        {
            using (var fs = new FileStream(tmp, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 20))
            {
                write(fs);
                fs.Flush(flushToDisk: true);
            }
            File.Move(tmp, path, overwrite: true);
        }
        catch (IOException e) when (IsDiskFull(e))
        {
            TryDelete(tmp);
            throw new DiskFullException(path, e);
        }
        catch
        {
            TryDelete(tmp);
            throw;
        }
    }

    /// <summary>Writes UTF-8 text atomically (see <see cref="Write(string, Action{Stream})"/>).</summary>
    public static void WriteAllText(string path, string text) =>
        Write(path, s =>
        {
            var bytes = new System.Text.UTF8Encoding(false).GetBytes(text);
            s.Write(bytes);
        });

    /// <summary>
    /// Builds a folder atomically: <paramref name="fill"/> writes into a fresh temporary sibling
    /// folder, which then replaces <paramref name="folder"/> (an existing folder is moved aside first
    /// and deleted afterwards). On failure the temporary folder is removed and the old folder kept.
    /// </summary>
    public static void WriteFolder(string folder, Action<string> fill)
    {
        var full = Path.GetFullPath(folder.TrimEnd(Path.DirectorySeparatorChar));
        Directory.CreateDirectory(Path.GetDirectoryName(full)!);
        var tmp = TempPathFor(full);
        Directory.CreateDirectory(tmp);
        try
        {
            fill(tmp);
            if (Directory.Exists(full))
            {
                var old = TempPathFor(full) + ".old";
                Directory.Move(full, old);
                Directory.Move(tmp, full);
                try { Directory.Delete(old, recursive: true); } catch (IOException) { }
            }
            else
            {
                Directory.Move(tmp, full);
            }
        }
        catch (Exception e)
        {
            try { Directory.Delete(tmp, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
            // Name the folder being written, not the temporary file inside it that met the full disk.
            if (e is IOException io && IsDiskFull(io)) throw new DiskFullException(full, io);
            throw;
        }
    }

    /// <summary>
    /// Clears what writers killed mid-write left in <paramref name="folder"/> (not recursive): the
    /// temporary files and folders of processes that no longer run are deleted, and a folder that
    /// <see cref="WriteFolder"/> had moved aside when its process died, before the new one took its
    /// place, is moved back. Temporaries of live processes are left alone. Returns how many entries
    /// were removed or restored.
    /// </summary>
    public static int RemoveStale(string folder)
    {
        if (!Directory.Exists(folder)) return 0;
        var count = 0;
        foreach (var entry in Directory.EnumerateFileSystemEntries(folder, ".*.tmp*"))
        {
            var name = Path.GetFileName(entry);
            var old = name.EndsWith(".tmp.old", StringComparison.Ordinal);
            if (!old && !name.EndsWith(".tmp", StringComparison.Ordinal)) continue;
            var core = name[1..^(old ? ".tmp.old".Length : ".tmp".Length)];
            // core = <target>.<pid>.<guid>
            var parts = core.Split('.');
            if (parts.Length < 3 || !int.TryParse(parts[^2], out var pid) || parts[^1].Length != 32) continue;
            if (pid == Environment.ProcessId || Alive(pid)) continue;
            var target = Path.Combine(folder, string.Join('.', parts[..^2]));
            try
            {
                if (old && Directory.Exists(entry) && !Directory.Exists(target) && !File.Exists(target)) Directory.Move(entry, target);
                else if (Directory.Exists(entry)) Directory.Delete(entry, recursive: true);
                else File.Delete(entry);
                count++;
            }
            catch (IOException) { }
            catch (UnauthorizedAccessException) { }
        }
        return count;
    }

    private static bool Alive(int pid)
    {
        try { using var p = System.Diagnostics.Process.GetProcessById(pid); return !p.HasExited; }
        catch (ArgumentException) { return false; }
        catch (InvalidOperationException) { return false; }
    }

    // ENOSPC (28) on Linux, ERROR_DISK_FULL / ERROR_HANDLE_DISK_FULL on Windows; a wrapped one counts too.
    private static bool IsDiskFull(IOException e) =>
        e is DiskFullException
        || (OperatingSystem.IsWindows() ? (e.HResult & 0xFFFF) is 112 or 39 : e.HResult == 28)
        || e.Message.Contains("No space left on device", StringComparison.Ordinal);

    private static void TryDelete(string path)
    {
        try { File.Delete(path); } catch (IOException) { } catch (UnauthorizedAccessException) { }
    }
}

/// <summary>
/// The disk filled up while <see cref="AtomicFile"/> wrote <see cref="Target"/>: nothing was written
/// there (the previous file or folder, if any, is unchanged) and the temporary was removed.
/// </summary>
public sealed class DiskFullException(string target, Exception inner)
    : IOException($"{target}: no space left on the device; nothing was written there (what was there before is unchanged)", inner)
{
    /// <summary>The file or folder that could not be written.</summary>
    public string Target { get; } = target;
}
