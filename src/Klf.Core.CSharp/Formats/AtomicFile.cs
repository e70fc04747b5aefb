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
        catch
        {
            try { Directory.Delete(tmp, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
            throw;
        }
    }

    private static void TryDelete(string path)
    {
        try { File.Delete(path); } catch (IOException) { } catch (UnauthorizedAccessException) { }
    }
}
